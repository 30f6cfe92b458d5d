"""A response's head sent in one write with its body, not in a write of its own.

uvicorn writes a response's status line and headers when the app starts the response, and
its body in a second write: two syscalls and two TCP segments for every small answer, and a
client that wakes twice to read it. aiohttp's server (bench/forwarder.py) sends both at
once. Installed on each request's cycle (guarded_protocol.py), this transport holds the
head until the body's first bytes and writes the two together. A 100 Continue, written
before the head, passes at once; a response with no body write (HEAD) or cut short sends
its held head when it completes or the connection closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class HeadWithBody:
    """The transport one RequestResponseCycle writes through; anything else goes to the
    connection's own."""

    __slots__ = ("_completed", "_cycle", "_head", "_held", "_transport")

    @classmethod
    def install(cls, cycle: RequestResponseCycle) -> None:
        """Before the cycle's app runs."""
        transport = cls(cycle)
        cycle.transport = transport  # type: ignore[assignment]
        cycle.on_response = transport._complete

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._transport = cycle.transport
        # let go once the answer is out: the cycle holds this transport, and a loop of
        # references would leave every request's cycle to the cyclic garbage collector
        self._cycle: RequestResponseCycle | None = cycle
        self._completed: Callable[[], None] = cycle.on_response
        self._head = b""
        self._held = False  # a head is held, or was: later writes pass

    def write(self, data: bytes) -> None:
        if self._held:
            if self._head:
                head, self._head = self._head, b""
                self._transport.writelines((head, data))
                return
        elif self._cycle is not None and self._cycle.response_started:  # its first write
            self._head, self._held = data, True
            return
        self._transport.write(data)

    def flush(self) -> None:
        """The held head, if the body never came (HEAD, an app that stopped)."""
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()
        self._cycle = None

    def _complete(self) -> None:
        self.flush()
        completed, self._completed = self._completed, _nothing
        self._cycle = None
        completed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _nothing() -> None:
    pass
