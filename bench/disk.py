"""The disk's own flush times, the floor under any server that answers only once durable.

    .venv/bin/python bench/disk.py [--dir D] [--rate R] [--seconds S]

Writes SIZE bytes and calls fdatasync, RATE times a second, cycling over 16 MiB of one file
in D (as SQLite's WAL does), and prints each flush's time from when it was due, not from
when it began: a flush that waits behind a stalled one counts the wait. That is about what
an ideal durable server, one flush a request and nothing else, would answer with at that
pace (one that commits in groups catches up sooner after a stall); bench/run.py prints it
beside the relay's paced submit times.

On this project's machine the virtual disk stalls now and then, for 20-100 ms at a time,
with nothing else running: a few times in 20 s on some minutes, never on others. A paced
relay's slowest answers come in bursts too (issue 9's paced p99), some of them behind its
own flushes (`perf trace`: the API process's fdatasync of the -wal file, 8-36 ms at times),
but with its database on a tmpfs (bench/run.py --db-dir /dev/shm), alternated with the
disk, the relay's p99 was no better on most runs: the disk is not their main cause (README).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SIZE = 16 * 1024  # about a WAL append of one or two submissions
SPAN = 16 * 2**20
SLOW_MS = 20.0  # issue 9's paced p99 target
APART_SECONDS = 0.05  # slow answers sent closer than this together are one stall


@dataclass(frozen=True)
class Flushes:
    waits: list[tuple[float, float]]  # each: (due, in s from the first; ms from then to its end)
    own_ms: list[float]  # each flush's own time, from its write to its fdatasync's end
    seconds: float  # from the first's due time to the last's end
    filesystem: str  # of the folder written in (tmpfs: fdatasync does nothing)

    def describe(self) -> str:
        """The waits, and what tells a disk that stalls from one that cannot keep the pace
        (the waits then grow with the backlog): the pace reached and each flush's own time."""
        own = sorted(self.own_ms)
        done = len(self.waits) / self.seconds if self.seconds else math.nan
        return (f"{describe(summary(self.waits))}; on {self.filesystem}, {done:.0f}/s done, "
                f"a flush alone p99 {percentile(own, 0.99):.1f} ms")


def probe(folder: Path, rate: float, seconds: float, size: int = SIZE) -> Flushes:
    with tempfile.NamedTemporaryFile(dir=folder, prefix="disk-probe-") as file:
        fd = file.fileno()
        block = os.urandom(size)
        waits: list[tuple[float, float]] = []
        own: list[float] = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            if (ahead := due - time.perf_counter()) > 0:
                time.sleep(ahead)
            began = time.perf_counter()
            os.pwrite(fd, block, i * size % SPAN)
            os.fdatasync(fd)
            ended = time.perf_counter()
            waits.append((due - start, (ended - due) * 1000))
            own.append((ended - began) * 1000)
    return Flushes(waits, own, time.perf_counter() - start, filesystem(folder))


def filesystem(folder: Path) -> str:
    """The type of the file system `folder` is on, from /proc/mounts ("?" elsewhere)."""
    path, found, best = str(folder.resolve()), "?", -1
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in mounts:
        _, point, kind, *_ = line.split()
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:
            found, best = kind, len(point)
    return found


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else math.nan


def summary(waits: list[tuple[float, float]]) -> dict[str, float]:
    """Percentiles, and how many waits took SLOW_MS or more in how many stalls: the slow
    ones sent within APART_SECONDS of each other (a stall's queue) count as one."""
    ordered = sorted(ms for _, ms in waits)
    slow = sorted(at for at, ms in waits if ms >= SLOW_MS)
    stalls = sum(1 for before, at in zip([-math.inf, *slow], slow, strict=False)
                 if at - before >= APART_SECONDS)
    return {"p50_ms": percentile(ordered, 0.5), "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else math.nan, "slow": len(slow),
            "stalls": stalls}


def describe(figures: dict[str, float]) -> str:
    stalls = figures["stalls"]
    return (f"p50 {figures['p50_ms']:.2f} ms  p99 {figures['p99_ms']:.1f} ms  "
            f"max {figures['max_ms']:.0f} ms; {figures['slow']:.0f} of them "
            f"{SLOW_MS:g} ms or more, in {stalls:.0f} stall{'' if stalls == 1 else 's'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="the folder to write in (default: the temporary folder, where "
                             "bench/run.py puts its database)")
    parser.add_argument("--rate", type=float, default=750.0, help="flushes a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=SIZE, help="bytes written before each")
    args = parser.parse_args()
    flushes = probe(args.dir, args.rate, args.seconds, args.size)
    print(f"disk alone: {len(flushes.waits)} writes of {args.size} B + fdatasync at "
          f"{args.rate:g}/s in {args.dir}: {flushes.describe()}")


if __name__ == "__main__":
    main()
