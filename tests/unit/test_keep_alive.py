"""How long the delivery client reuses an idle connection, by the partner's `Keep-Alive`
header (the wire behaviour: tests/integration/test_http_deliverer.py)."""

from __future__ import annotations

import pytest

from notify_relay.adapters import http1


@pytest.mark.parametrize(("header", "seconds"), [
    (None, http1.KEPT_SECONDS), ("timeout=5", 4.0), ("timeout=5, max=1000", 4.0),
    ("max=100, Timeout = 3", 2.0), ('timeout="4"', 3.0), ("timeout=1", 0.0),
    ("timeout=0", 0.0), ("timeout=-3", 0.0), ("timeout=600", http1.KEPT_SECONDS),
    ("timeout=nan", http1.KEPT_SECONDS), ("timeout=soon", http1.KEPT_SECONDS),
    ("max=5", http1.KEPT_SECONDS), ("", http1.KEPT_SECONDS), ("timeout=1.5", 0.5),
    ("timeout=1.0000000000000002", 0.0), ("timeout=1.05", 0.0),
    ("," * 200 + "timeout=3", http1.KEPT_SECONDS),
    ("timeout=5, " + "x-vendor=1, " * 40, 4.0), ("x" * 118 + ",timeout=30", 2.0),
    ("x" * 119 + ",timeout=3", http1.KEPT_SECONDS)])
def test_keep_alive_timeouts_are_read_leniently(header: str | None, seconds: float) -> None:
    """Only the value's first 128 characters are read (a partner's head is parsed on the
    event loop at every answer): a timeout beyond them is not seen, one cut short reads as
    shorter (`timeout=3` of `timeout=30`), which keeps a connection less (a number cut
    into one that does not parse, `1e` of `1e-1`, reads as none); a reuse of under 0.1 s is
    none."""
    assert http1._kept_for(header) == pytest.approx(seconds)
