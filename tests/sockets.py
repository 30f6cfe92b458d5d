"""A free TCP port on 127.0.0.1, for the servers the tests start.

The port is only free when asked: the server that takes it binds it later (a child process
binds it a second or so later). A port the kernel picks (bind to 0) can meanwhile go to the
other test worker's server too, which then answered a test meant for this one (a keyless
server's test got a keyed server's 200). So each worker takes its ports from a slice of its
own below the kernel's ephemeral range, in turn, and never the same one twice.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

LOWEST = 10_000


def _ephemeral_low() -> int:
    """Where the ports the kernel hands out (bind to 0, outgoing connections) begin."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def _slice() -> range:
    """This worker's ports: pytest-xdist's gwN of M gets the Nth of M equal slices."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (max(_ephemeral_low(), LOWEST + 1_000) - LOWEST) // workers
    start = LOWEST + (worker % workers) * size
    return range(start, start + size)


_PORTS = _slice()
# a random start, so that a second test session beside this one is unlikely to follow it
_NEXT = itertools.count(random.randrange(len(_PORTS)))


def free_port() -> int:
    """A port of this worker's slice that nothing listens on now, none handed out before."""
    for _ in range(len(_PORTS)):
        port = _PORTS[next(_NEXT) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")
