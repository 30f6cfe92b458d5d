"""The API process of a two-process `serve`: `python -m notify_relay.embedded.api_process
WAKE_FD LIFELINE_FD`, its Settings (the owner's, flags included) and the owner's socket
pickled on stdin. The stop signals the owner ignores (`nohup`) it ignores too, from its
start (api_child.spawn).

Started by the owner as early as it can (api_child.py), it imports its stack, then waits
for its settings, which the owner writes once it has opened the file and serves its socket;
no settings (the end of its input: the owner did not start, or is gone) and it exits at
once. It ends when told (SIGTERM, SIGINT) or when the owner is gone.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import sys

from notify_relay.embedded import stop_signals

log = logging.getLogger("notify_relay.cli")


def main(argv: list[str]) -> int:
    # before the imports, which take a second; blocked until now (api_child.spawn)
    stops = stop_signals.API_PROCESS_SIGNALS
    stop_signals.hold(stops)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    from notify_relay.api.app import create_app
    from notify_relay.bootstrap import build_embedded_api
    from notify_relay.config import Settings
    from notify_relay.embedded.link import READY, WakeSender, watch_lifeline
    from notify_relay.embedded.owner import OwnerLink
    from notify_relay.embedded.server import Server, uvicorn_config
    from notify_relay.logs import configure_logging

    wake_fd, lifeline_fd = int(argv[0]), int(argv[1])
    given = sys.stdin.buffer.read()  # once the owner is ready (api_child.py)
    if not given:  # it did not start after all, or died: this one has nothing to do
        return 0
    settings, socket_path = pickle.loads(given)  # noqa: S301 - the owner's, over a pipe
    assert isinstance(settings, Settings)
    assert isinstance(socket_path, str)
    configure_logging(settings.log_level)
    wake = WakeSender(wake_fd)
    owner = OwnerLink(socket_path)
    runtime = build_embedded_api(settings, wake=wake.wake, owner_ready=owner.check_ready)
    runtime.stops.insert(0, owner.close)  # stopped last
    server = Server(uvicorn_config(
        create_app(runtime, listen_host=settings.host, freeze_at_start=True, owner=owner),
        settings), also=(stop_signals.FROM_OWNER,))

    async def run() -> None:
        def owner_gone() -> None:
            log.error("the owner process (delivery) is gone: stopping")
            server.should_exit = True

        watch_lifeline(lifeline_fd, owner_gone)
        serving = await server.serve_until_listening()
        if server.started:
            wake.send(READY)
        await serving

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(run())
    stop_signals.ignore(stops)  # stopped
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
