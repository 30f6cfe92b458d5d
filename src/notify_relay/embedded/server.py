"""How `serve` runs uvicorn: on the port (the API), or on the owner's Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Generator, Sequence
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.lifespan.on import LifespanOn

from notify_relay.api.guarded_protocol import guarded_protocol
from notify_relay.config import Settings
from notify_relay.embedded import stop_signals

# connections and requests in progress at once; beyond, a 503 (api/guarded_protocol.py)
MAX_CONNECTIONS = 2048


def uvicorn_config(app: Any, settings: Settings, *, uds: str | None = None) -> uvicorn.Config:
    where: dict[str, Any] = {"uds": uds} if uds else {"host": settings.host,
                                                       "port": settings.port}
    return uvicorn.Config(
        app,
        **where,
        log_config=None,
        access_log=settings.access_log,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(round(settings.shutdown_grace), 1),
        http=guarded_protocol(settings.head_timeout, settings.request_timeout,
                              getattr(app.state, "plain_submissions", None)),
        # no WebSocket is served: an Upgrade is ignored and the request answered as HTTP;
        # with the WebSocket protocol on, a POST that asked for one got no answer at all
        ws="none",
        limit_concurrency=MAX_CONNECTIONS,
    )


class Server(uvicorn.Server):
    """uvicorn's server, with an event set once it listens, and stop signals as
    stop_signals.py holds them: SIGHUP is one, one that came before the server ran stops it
    once it has started, and the same signal a second time stops at once: requests in
    progress are cut, and `hurries` (the worker's) end the grace of attempts in flight.
    uvicorn itself stops at once only on a second SIGINT, and then skips the app's
    shutdown, which here records the attempts it abandons."""

    def __init__(self, config: uvicorn.Config, hurries: Sequence[Callable[[], None]] = (),
                 also: tuple[int, ...] = ()) -> None:
        """`also`: signals that stop it besides uvicorn's SIGTERM and SIGINT, and SIGHUP."""
        super().__init__(config)
        self.listening = asyncio.Event()
        self._hurries = hurries
        self._more = (signal.SIGHUP, *also)
        self._signals: list[int] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    async def serve_until_listening(self) -> asyncio.Task[None]:
        """Serve in a task; returns it once listening, or once it ended (failed start)."""
        serving = asyncio.create_task(self.serve())
        listening = asyncio.create_task(self.listening.wait())
        await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        return serving

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # as uvicorn: signals reach the main thread only
            return
        stop_signals.hold((*stop_signals.STOP_SIGNALS, *self._more))  # what uvicorn puts back
        with super().capture_signals():
            previous = {number: signal.getsignal(number) for number in self._more}
            for number, handler in previous.items():
                if handler is not signal.SIG_IGN:  # `nohup`: it stays ignored
                    signal.signal(number, self.handle_exit)
            try:
                for number in stop_signals.take():  # those that came before
                    self.handle_exit(number, None)
                yield
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's own rule (a SIGINT after any signal stops at once) would cut requests
        in progress in the API process at one Ctrl-C after the owner's word; and nothing
        is appended for uvicorn to raise again after its shutdown."""
        again = sig in self._signals
        self._signals.append(sig)
        self.should_exit = True
        if not again:
            return
        self.force_exit = True
        with contextlib.suppress(RuntimeError):  # no loop runs yet: nothing waits
            loop = asyncio.get_running_loop()
            for hurry in self._hurries:
                loop.call_soon_threadsafe(hurry)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        lifespan = self.lifespan
        if self.force_exit and isinstance(lifespan, LifespanOn) \
                and not lifespan.shutdown_event.is_set():
            await lifespan.shutdown()  # uvicorn skips it when forced; the runtime still stops
