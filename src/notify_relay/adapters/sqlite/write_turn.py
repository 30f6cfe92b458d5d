"""The write turn of a file that several processes of one server write: an flock on
`<db>.writer` (SQLite takes one writer at a time; this makes them queue, see database.py).

Taken at once when it is free. Otherwise awaited in a daemon thread of its own: a process
stuck while it holds the turn (stopped, a paused machine) must not keep this one from
serving, answering 503, or exiting; the caller bounds its wait and may give up (cancel),
and a turn that comes after that is given back at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import queue
import threading
import time
from pathlib import Path

POLL_SECONDS = 0.002  # take_within only: at close, when no thread is worth starting


class WriteTurn:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()
        self._requests: queue.SimpleQueue[concurrent.futures.Future[None] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    def try_take(self) -> bool:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def wait(self) -> concurrent.futures.Future[None]:
        """Resolved once the turn is this process's. Cancel it to stop waiting."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="sqlite-write-turn",
                                            daemon=True)
            self._thread.start()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._requests.put(future)
        return future

    def take_within(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.try_take():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def give(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        """The flock goes with the file; a thread still waiting ends with the process."""
        self._requests.put(None)
        self._file.close()

    def _serve(self) -> None:
        while (future := self._requests.get()) is not None:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX)
            except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(exc)
                continue
            try:
                future.set_result(None)
            except concurrent.futures.InvalidStateError:  # given up meanwhile: give it back
                with contextlib.suppress(OSError, ValueError):
                    self.give()
