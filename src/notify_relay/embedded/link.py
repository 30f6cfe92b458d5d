"""The pipes between the owner process and its API process.

Wake pipe (API -> owner): a byte after the API queued work, at most one per loop turn, so
that the owner's worker claims it at once instead of at its next idle poll; `READY` once
the API process listens. Lifeline (owner -> API): never written; its end of file tells the
API process that the owner is gone, however it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

WAKE = b"w"
READY = b"r"


class WakeSender:
    """The API process's end of the wake pipe: non-blocking, so that a full pipe (the owner
    has not read yet, and will wake anyway) never stalls a request."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._due = False
        os.set_blocking(fd, False)

    def wake(self) -> None:
        if not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._due = False
        self.send(WAKE)

    def send(self, signal: bytes) -> None:
        # full: a wake is pending; broken: the owner is gone (the lifeline says so)
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._fd, signal)


class WakeListener:
    """The owner's end: calls `on_wake` for wakes, `on_ready` when the API listens; stops
    reading at end of file (the API process exited)."""

    def __init__(self, fd: int, on_wake: Callable[[], None],
                 on_ready: Callable[[], None]) -> None:
        self._fd = fd
        self._on_wake = on_wake
        self._on_ready = on_ready
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        if not data:
            self.close()
            return
        if READY in data:
            self._on_ready()
        if WAKE in data:
            self._on_wake()

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def watch_lifeline(fd: int, on_gone: Callable[[], None]) -> None:
    """In the API process: `on_gone` when the owner's end closes."""
    loop = asyncio.get_running_loop()

    def read() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            on_gone()

    os.set_blocking(fd, False)
    loop.add_reader(fd, read)
