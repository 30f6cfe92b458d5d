"""What else the machine is doing, from /proc: benchmarks compare within one run, and
another process taking a core in one case and not its reference skews the ratio."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuMark:
    at: float
    busy: int  # jiffies the whole machine was busy
    ours: int  # jiffies of this process and its descendants (server, partners)


def cpu_mark() -> CpuMark:
    """For `foreign_cores`: the machine's busy time and ours."""
    usage: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        # utime and stime, and those of the children it has waited for: a server that
        # stopped before the second mark still counts as ours
        usage[int(entry.name)] = sum(int(f) for f in fields[11:15])
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    ours, stack = 0, [os.getpid()]
    while stack:
        pid = stack.pop()
        ours += usage.get(pid, 0)
        stack += children.get(pid, [])
    values = _machine_jiffies()
    return CpuMark(time.monotonic(), sum(values) - values[3] - values[4], ours)


def foreign_cores(start: CpuMark, end: CpuMark) -> float:
    """Cores used by processes other than this benchmark's between two marks."""
    foreign = (end.busy - start.busy) - (end.ours - start.ours)
    return max(0.0, foreign / CLOCK_TICKS / max(end.at - start.at, 1e-9))


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants alive now (a two-process `serve` is two processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(
                int(entry.name))
    tree, stack = [], [pid]
    while stack:
        tree.append(current := stack.pop())
        stack += children.get(current, [])
    return tree


def _machine_jiffies() -> list[int]:
    """/proc/stat's first line: user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def _process_jiffies(pid: int) -> int:
    """User + system jiffies of one process; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def written_bytes(pid: int) -> int:
    """Bytes a process and its live descendants have had written to the disk so far:
    /proc/PID/io's write_bytes (counted as pages are dirtied, once until they are written
    back; a tmpfs counts none) less cancelled_write_bytes (those of files truncated or
    deleted before they were)."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = dict(line.split(": ") for line in
                          Path(f"/proc/{member}/io").read_text().splitlines())
        except OSError:
            continue
        total += int(fields["write_bytes"]) - int(fields["cancelled_write_bytes"])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process and its live descendants have used: per message, the
    cost that a ratio of rates hides when something else on the machine takes the other
    core."""
    return sum(_process_jiffies(member) for member in process_tree(pid)) / CLOCK_TICKS


@dataclass(frozen=True)
class SplitMark:
    at_jiffies: dict[str, int]  # CPU used so far by each named group of processes
    idle: int  # jiffies the whole machine was idle (iowait included)
    total: int


def split_mark(groups: dict[str, list[int]]) -> SplitMark:
    """For `split_between`: where the CPU goes inside a run (which process is the bottleneck,
    and whether a core sits idle) rather than one sum."""
    used = {name: sum(_process_jiffies(pid) for pid in pids) for name, pids in groups.items()}
    values = _machine_jiffies()
    return SplitMark(used, values[3] + values[4], sum(values))


def split_between(start: SplitMark, end: SplitMark, messages: int) -> tuple[dict[str, float],
                                                                              float]:
    """Each group's CPU in ms a message between two marks, and the machine's idle share."""
    per_message = {name: (end.at_jiffies[name] - used) / CLOCK_TICKS * 1000 / messages
                   for name, used in start.at_jiffies.items()}
    idle = (end.idle - start.idle) / max(1, end.total - start.total)
    return per_message, idle


def wait_quiet(below: float, timeout: float, label: str, window: float = 3.0) -> None:
    """Before a measurement: wait (at most `timeout` s) until other processes use fewer
    than `below` cores over `window` s, so that a test suite running beside a benchmark
    does not land in one case of a comparison and not in its reference."""
    if below <= 0:
        return
    deadline, waited = time.monotonic() + timeout, False
    while True:
        start = cpu_mark()
        time.sleep(window)
        load = foreign_cores(start, cpu_mark())
        if load < below:
            if waited:
                print(f"  (machine quiet again: other processes {load:.2f} cores)", flush=True)
            return
        if time.monotonic() > deadline:
            print(f"  ! {label}: other processes still use {load:.2f} cores after "
                  f"{timeout:g} s of waiting; running anyway", flush=True)
            return
        if not waited:
            print(f"  ({label}: other processes use {load:.2f} cores; waiting up to "
                  f"{timeout:g} s for them to drop below {below:g})", flush=True)
            waited = True
