"""The owner process of a two-process `serve`: runs delivery and its Unix socket, starts
the API process, restarts it if it crashes, and stops it first on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import time
from types import FrameType

import uvicorn

from notify_relay.api.app import create_app
from notify_relay.config import Settings
from notify_relay.embedded import stop_signals
from notify_relay.embedded.api_child import ApiChild, spawn
from notify_relay.embedded.link import WakeListener
from notify_relay.embedded.server import Server, uvicorn_config
from notify_relay.runtime import Runtime
from notify_relay.worker.wakeup import WakeUp

log = logging.getLogger("notify_relay.cli")
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes with its NUL; a margin
HEALTHY_SECONDS = 60.0  # an API process that lived this long restarts at the first delay
STOP_MARGIN_SECONDS = 5.0  # beyond the API's own grace, before it is killed
# an API process that stopped cleanly while the owner was not stopping: the owner's own
# stop signal, if one is coming (a Ctrl-C or systemd's stop signal both), comes this soon
ALONE_SECONDS = 0.5


class ApiProcess:
    """Starts and watches the API process; `failed` once it could not start at all.

    `first`: the first API process, started early (api_child.py); its starter (serve)
    discards it if it is never used."""

    def __init__(self, settings: Settings, socket_path: str, wakeup: WakeUp,
                 first: ApiChild | None = None) -> None:
        self._settings = settings
        self._socket_path = socket_path
        self._wakeup = wakeup
        self._first = first
        self._proc: ApiChild | None = None
        self._exited: asyncio.Future[int] | None = None  # the current one's exit status
        self._stopping = False
        self._asked = 0  # stop requests sent to the current API process
        self._signalled = False  # the last one was ended by a signal, not by its own error
        self._alone = False  # the last one was stopped cleanly, the owner not stopping
        self.failed = False

    async def run(self) -> None:
        """Until the owner stops (signal_stop), or until the first API process fails to start
        (then `failed`); later ones are started again, and again, with growing delays."""
        restarts = 0
        first = True
        while not self._stopping:
            began = time.monotonic()
            try:
                started = await self._run_once()
            except OSError:  # it could not even be started (out of processes, of files)
                log.exception("starting the API process failed")
                started = False
            if self._stopping:
                return
            if first and not started and not self._signalled:
                # its own error (a setting, the port): a restart would fail alike; one
                # killed from outside (the OOM killer, a stray kill) as the owner started,
                # which now takes a second and more, is started again like a crash
                self.failed = True
                return
            again = "" if first else " again"
            first = False
            if time.monotonic() - began > HEALTHY_SECONDS:  # a crash now and then: at once
                restarts = 0
            delay = RESTART_DELAYS[min(restarts, len(RESTART_DELAYS) - 1)]
            restarts += 1
            if self._alone:
                log.warning("the API process was stopped by itself, not the server: "
                            "starting another", extra={"restartInSeconds": delay,
                                                       "restarts": restarts})
            else:
                log.error("the API process ended unexpectedly: restarting it" if started else
                          f"the API process did not start{again}: trying again",
                          extra={"restartInSeconds": delay, "restarts": restarts})
            await asyncio.sleep(delay)  # a stop meanwhile cancels this task (serve)

    async def _run_once(self) -> bool:
        """One API process from start to end; whether it started listening."""
        self._alone = False
        child, self._first = self._first or spawn(), None
        proc = child.proc
        self._proc = child
        # one thread waits for its end (its pid is not the event loop's to reap)
        exited = self._exited = asyncio.ensure_future(asyncio.to_thread(proc.wait))
        ready = asyncio.Event()
        listener = WakeListener(child.wake_r, self._wakeup.ready, ready.set)
        child.wake_r = -1  # the listener's now
        try:
            self._asked = 0
            if self._stopping:  # a stop came while it was being started: it has done nothing
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await exited
                return False
            try:
                await asyncio.to_thread(child.send_settings,
                                        pickle.dumps((self._settings, self._socket_path)))
            except OSError:  # it died at once (a signal to the group, say)
                await exited
                if not self._stopping:
                    log.error("the API process ended before it read its settings",
                              extra={"exitStatus": proc.returncode})
                return False
            listening = asyncio.create_task(ready.wait())
            await asyncio.wait([exited, listening], return_when=asyncio.FIRST_COMPLETED)
            listening.cancel()
            if ready.is_set() and not self._stopping:
                log.info("the API process listens", extra={"pid": proc.pid})
            code = await exited
            if not ready.is_set() and not self._stopping:  # its own error, if any, is above
                log.error("the API process ended before it listened",
                          extra={"exitStatus": code})
            self._alone = code == 0 and ready.is_set() and not await self._owner_stops()
            return ready.is_set()
        finally:
            self._signalled = proc.returncode is not None and proc.returncode < 0
            if not child.given:  # left on the way (an error, a cancel): it has done nothing
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            listener.close()
            child.close_pipes()  # the API process sees the end of its lifeline
            self._proc = None

    async def _owner_stops(self) -> bool:
        """Whether the owner is stopping, or is told to within ALONE_SECONDS: the API process
        stopped cleanly, so it was told to stop, and a Ctrl-C or systemd's stop signals the
        owner too. A signal to the API process alone (a stray kill) is not the server's stop:
        stopping the server for it, with exit status 0, would leave it stopped under
        systemd's Restart=on-failure; another API process is started instead, as after a
        crash."""
        deadline = time.monotonic() + ALONE_SECONDS
        while not self._stopping:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def signal_stop(self, at_once: bool = False) -> None:
        """Ask the API process to stop: it finishes its requests, unless `at_once` (the
        owner got its stop signal a second time). Asked twice, it stops at once, so it is
        asked once, and then once more only `at_once` (from a signal handler too)."""
        self._stopping = True
        proc = self._proc.proc if self._proc is not None else None
        if proc is None or proc.returncode is not None or self._asked >= (2 if at_once else 1):
            return
        self._asked += 1
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(stop_signals.FROM_OWNER)

    async def wait_stopped(self) -> None:
        """Kill it if it outlives its grace."""
        child, exited = self._proc, self._exited
        if child is None or exited is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(exited),
                                   self._settings.shutdown_grace + STOP_MARGIN_SECONDS)
        except TimeoutError:
            log.error("the API process did not stop in time: killed it")
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            await exited


class _OwnerServer(Server):
    def __init__(self, config: uvicorn.Config, api: ApiProcess, runtime: Runtime) -> None:
        super().__init__(config, runtime.hurries)
        self._api = api

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._api.signal_stop(at_once=self.force_exit)


def socket_path(db: str) -> tuple[str, str | None]:
    """Where the owner listens: beside the database (a folder no cleaner empties, and a
    socket that a crash leaves behind is bound over at the next start), or in a private
    temporary folder (returned second, to remove) when that path is too long for a Unix
    socket (108 bytes)."""
    beside = os.path.abspath(f"{db}.sock")
    for candidate in (beside, os.path.relpath(beside)):
        if len(os.fsencode(candidate)) <= MAX_SOCKET_PATH:
            return candidate, None
    directory = tempfile.mkdtemp(prefix="notify-relay-")  # 0700
    if len(os.fsencode(directory)) > MAX_SOCKET_PATH - len("/owner.sock"):  # a long TMPDIR
        os.rmdir(directory)
        directory = tempfile.mkdtemp(prefix="notify-relay-", dir="/tmp")
    return os.path.join(directory, "owner.sock"), directory


def serve_two_processes(settings: Settings, runtime: Runtime, wakeup: WakeUp,
                        first: ApiChild) -> int:
    """The owner: its socket, then the API process (`first`, started early, is given its
    settings); exits 1 if the API process could not start (its error is in the log), else
    0 after a clean stop."""
    path, directory = socket_path(settings.db)
    api = ApiProcess(settings, path, wakeup, first)
    server = _OwnerServer(uvicorn_config(
        create_app(runtime, listen_host=settings.host, freeze_at_start=True), settings,
        uds=path), api, runtime)

    async def run() -> None:
        serving = await server.serve_until_listening()
        if server.started:
            os.chmod(path, 0o600)  # uvicorn makes it 0666; it forwards no key of its own
            log.info("the owner process serves its socket; starting the API process",
                     extra={"pid": os.getpid(), "socket": path})
            watching = asyncio.create_task(api.run())
            try:
                await asyncio.wait([watching, serving], return_when=asyncio.FIRST_COMPLETED)
            finally:  # whatever ended the wait, the owner's own stop runs whole
                server.should_exit = True
                api.signal_stop()
                await api.wait_stopped()
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        await serving

    try:
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(run())
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if server.started and not api.failed else 1

