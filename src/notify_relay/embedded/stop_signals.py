"""Stop signals held from a server process's first Python statements until its server can
act on them, and ignored once it has stopped.

`serve` takes a second or more to import its stack and open its file before uvicorn puts its
own handlers in place. A SIGTERM in that time killed it (exit 143) where the contract
promises a clean stop with status 0; a Ctrl-C printed a KeyboardInterrupt traceback. Held
here, such a signal is handed to the server as soon as it handles signals (server.py), and
the server stops at once after starting. The same signal a second time before the server
runs stops the process at once, by that signal (a start that hangs, on a file that does not
answer, can still be interrupted); after, the server has its own rule. The interpreter's
own start, some 50 ms, is not covered.

SIGHUP is a stop signal too: closing the terminal that runs `serve` sends it, and it ended
the process on the spot, attempts in flight and all. A signal the process was started to
ignore (`nohup`) stays ignored.

The owner asks its API process to stop with SIGUSR1, not SIGTERM: under systemd, whose stop
signals every process of the service, the API process would otherwise get SIGTERM twice,
which is the signal to stop at once (server.py).

This module imports nothing heavy: it is imported before the rest of the server's stack.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FROM_OWNER = signal.SIGUSR1  # the owner's word to its API process
# the API process's: blocked by the owner while it spawns it, unblocked by it once it holds
# them (api_child.spawn, api_process.main)
API_PROCESS_SIGNALS = (*STOP_SIGNALS, FROM_OWNER)
_held: list[int] = []
_taken = False  # a server has taken them: it runs, or has run and is stopping


def hold(numbers: tuple[int, ...] = STOP_SIGNALS) -> None:
    """From now on these signals are kept, not acted on, except those ignored."""
    for number in numbers:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, keep)


def keep(number: int, frame: FrameType | None) -> None:
    if not _taken and number in _held:  # the same twice while starting: at once
        signal.signal(number, signal.SIG_DFL)
        signal.raise_signal(number)
        os._exit(128 + number)  # as PID 1 (a container without an init) the kernel drops it
    _held.append(number)


def take() -> list[int]:
    """The signals held since the last take, oldest first."""
    global _taken
    _taken = True
    taken = list(_held)
    _held.clear()
    return taken


def ignore(numbers: tuple[int, ...] = STOP_SIGNALS) -> None:
    """Once the server has stopped: the interpreter's exit puts the default actions back
    for its handlers, and a signal then would end a clean stop with 143 or 130."""
    for number in numbers:
        signal.signal(number, signal.SIG_IGN)
