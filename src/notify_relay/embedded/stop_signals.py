"""Stop signals held from a server process's first moment until its server can act on them.

`serve` takes a second or more to import its stack and open its file before uvicorn puts its
own handlers in place. A SIGTERM in that time killed it (exit 143) where the contract
promises a clean stop with status 0; a Ctrl-C printed a KeyboardInterrupt traceback. Held
here, such a signal is handed to the server as soon as it handles signals (server.py), and
the server stops at once after starting.

SIGHUP is a stop signal too: closing the terminal that runs `serve` sends it, and it ended
the process on the spot, attempts in flight and all.

The owner asks its API process to stop with SIGUSR1, not SIGTERM: under systemd, whose stop
signals every process of the service, the API process would otherwise get SIGTERM twice,
which is the signal to stop at once (server.py).

This module imports nothing heavy: it is imported before the rest of the server's stack.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FROM_OWNER = signal.SIGUSR1  # the owner's word to its API process
_held: list[int] = []


def hold(numbers: tuple[int, ...] = STOP_SIGNALS) -> None:
    """From now on these signals are kept, not acted on. uvicorn also puts these handlers
    back after its shutdown and raises the signals it handled again: into these."""
    for number in numbers:
        signal.signal(number, keep)


def keep(number: int, frame: FrameType | None) -> None:
    _held.append(number)


def take() -> list[int]:
    """The signals held since the last take, oldest first."""
    taken = list(_held)
    _held.clear()
    return taken
