"""The request being served (correlation id, method and path), for log lines and problem
documents."""

from __future__ import annotations

import random
from contextvars import ContextVar

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
# (method, path) of the request being served, for the line that logs its refusal
request_line: ContextVar[tuple[str, str] | None] = ContextVar("request_line", default=None)

_UUID4_CLEAR = ~((0xF << 76) | (0xC << 60))  # the version nibble, the variant's two bits
_UUID4_SET = (0x4 << 76) | (0x8 << 60)  # version 4, variant RFC 4122


def new_correlation_id() -> str:
    """A random UUID (version 4) for a request that brought no correlation id.

    Drawn from the random module, not by uuid.uuid4 (a system call for os.urandom and a
    UUID object per request: 4.5 % of the API process's CPU under bench/run.py, py-spy):
    a correlation id labels a request's lines, it guards nothing. (A Lambda restored
    from a snapshot reseeds `random` first, see lambdas/api.py.)"""
    n = random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
