"""Starting the API process of a two-process `serve`, early.

Each of the two processes spends most of its start importing its stack (about a second
each, on this project's 2-core machine). The first API process is therefore started as soon
as the owner has read its settings, before the owner imports anything heavy: it imports
while the owner does, on the other core, and then waits for its settings on stdin, which the
owner writes once it has opened the file and serves its socket (supervisor.py). A server
answered /readyz 2.7-3.5 s after its start (median 3.3 s), and now 2.5-2.8 s (2.6 s):
six starts of each, alternated, on this project's 2-core machine.

An owner that does not get that far (its file is locked, a stop signal came first) kills
the child, which has done nothing but import (waiting for the end of its imports held such
an owner's exit up to a second). An owner that dies closes the child's stdin: at that end
of file the child exits at once, quietly. Later API processes (restarts) start the same
way.

This module imports nothing heavy: `serve` uses it before its own imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from notify_relay.embedded import stop_signals

DISCARD_WAIT_SECONDS = 5.0  # for one that was given them and should have ended: then killed


@dataclass
class ApiChild:
    """The process, and the owner's ends of its two pipes (link.py)."""

    proc: subprocess.Popen[bytes]
    wake_r: int
    lifeline_w: int
    given: bool = False  # its settings were sent: it may have started work since

    def send_settings(self, data: bytes) -> None:
        """Blocking (a pipe holds 64 KiB, and the child reads only once it has imported its
        stack): call it in a thread. OSError if the child is gone (most often from close(),
        whose flush writes what the buffer held: helper-54 found a dead child unreported)."""
        stdin = self.proc.stdin
        assert stdin is not None
        self.given = True
        try:
            stdin.write(data)
        finally:
            stdin.close()  # closed even when its flush fails, which it then raises

    def discard(self) -> None:
        """For a child that will not be given its settings (then killed: it has done
        nothing), or that was and has stopped: waited for, and killed if it does not end."""
        if not self.given:
            self.proc.kill()  # a no-op once it has been waited for
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.close_pipes()
        try:
            self.proc.wait(DISCARD_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close_pipes(self) -> None:
        for fd in (self.wake_r, self.lifeline_w):
            if fd >= 0:
                os.close(fd)
        self.wake_r = self.lifeline_w = -1


def spawn() -> ApiChild:
    """The API process, started; it reads its settings (and the owner's socket) from stdin.

    It starts with the stop signals blocked, as this process holds them while it spawns it
    (exec keeps the mask), until it holds them itself: in the interpreter's start and first
    imports (20-150 ms) a Ctrl-C to the group printed a KeyboardInterrupt traceback from
    it (helper-54; it was so before it started early too). Pending, not lost: each process
    gets them once it unblocks. Signals this process ignores (`nohup`) the child ignores
    too: exec keeps them ignored (the event loop's spawn, used before, reset them)."""
    wake_r, wake_w = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals.API_PROCESS_SIGNALS)
    try:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, this package
            [sys.executable, "-m", "notify_relay.embedded.api_process",
             str(wake_w), str(lifeline_r)],
            stdin=subprocess.PIPE, pass_fds=(wake_w, lifeline_r))
    except BaseException:
        os.close(wake_r)
        os.close(lifeline_w)
        raise
    finally:  # the child's ends: its own now (or nobody's, if it did not start)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(wake_w)
        os.close(lifeline_r)
    return ApiChild(proc, wake_r, lifeline_w)
