"""How long a claim holds the event loop when its messages carry big bodies.

    .venv/bin/python bench/claim_bodies.py [--body-kib K] [--messages N] [--rounds R]

Stores N messages with bodies of K KiB in a fresh SQLite file, then claims them all with
the worker's claim (attempts started, bodies read), while a task on the same loop notes
the longest time it waited for a turn. Prints, for the worker's bound on a claim's bodies
(CLAIM_BODY_BYTES) and for the 32 MiB it was before, each claim's hold of the loop
(median and longest) and the time to claim all N. Rounds alternate the two bounds, as
this machine's speed moves from one minute to the next. Both run today's claim, which
stops before a body that would pass its bound: the old claim passed it by one body, and
read one body more that it did not take, so it held the loop longer than "before" shows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from notify_relay.adapters.sqlite import SqliteDatabase, SqliteQueue, SqliteStore
from notify_relay.domain.message import BodyKind, Content, Message, MessageKey
from notify_relay.domain.retry import RetryPolicy
from notify_relay.worker.loop import CLAIM_BODY_BYTES

BEFORE = 32 * 1024 * 1024  # the bound until this benchmark was written


def a_message(message_id: str, body: bytes, now: datetime) -> Message:
    content = Content("https://partner.example/hook", "POST", (), body, BodyKind.TEXT)
    return Message.new(MessageKey("s", message_id), content, correlation_id="c",
                       policy=RetryPolicy(10, 1.0, 3600.0), timeout_seconds=10.0, now=now)


async def claim_all(folder: Path, bound: int, size: int, n: int) -> tuple[list[float], float]:
    """Each claim's longest wait of the loop, and the seconds to claim all n."""
    db = SqliteDatabase(folder / f"bound-{bound}-{time.monotonic_ns()}.db")
    db.open()
    try:
        store = SqliteStore(db)
        now = datetime.now(UTC)
        body = b"x" * size
        for i in range(n):
            await store.create_queued(a_message(f"m-{i}", body, now))
        queue = SqliteQueue(db)
        longest = [0.0]

        async def probe() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0)
                tick = time.perf_counter()
                longest[0] = max(longest[0], tick - last)
                last = tick

        probing = asyncio.create_task(probe())
        await asyncio.sleep(0.01)
        holds: list[float] = []
        claimed = 0
        began = time.perf_counter()
        while claimed < n:
            longest[0] = 0.0
            claims = await queue.claim_started(64, 30.0, None,
                                               lambda m: m.start_attempt(now), bound)
            await asyncio.sleep(0)
            holds.append(longest[0])
            claimed += len(claims)
        took = time.perf_counter() - began
        probing.cancel()
        return holds, took
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body-kib", type=int, default=6 * 1024 - 1)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.body_kib * 1024
    print(f"{args.messages} messages of {args.body_kib} KiB; each claim's hold of the loop")
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(1, args.rounds + 1):
            for name, bound in (("now", CLAIM_BODY_BYTES), ("before", BEFORE)):
                holds, took = asyncio.run(claim_all(Path(folder), bound, size, args.messages))
                print(f"round {round_} {name:6} bound {bound >> 10:6} KiB: {len(holds):3} "
                      f"claims, median {statistics.median(holds) * 1000:6.1f} ms, longest "
                      f"{max(holds) * 1000:6.1f} ms; all in {took * 1000:5.0f} ms")


if __name__ == "__main__":
    main()
