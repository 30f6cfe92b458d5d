"""The WorkQueue contract, run against every adapter (memory, SQLite file, ...)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from notify_relay.adapters.aws.sqs import SqsQueue
from notify_relay.domain.destination import DestinationKey
from notify_relay.domain.message import MessageKey
from notify_relay.ports import Claim, Entry, WorkQueue
from tests.contract.conftest import FakeClock

pytestmark = pytest.mark.anyio

# What a queue promises beyond at-least-once delivery with leases. SQS standard queues
# promise none of these; the Relay does not rely on them (see the SQS module's docstring).
EXTRA_TRAITS = {
    "ordered": "entries come out oldest due first",
    "controllable_time": "visibility follows the injected clock",
    "idempotent_enqueue": "a key is queued at most once",
    "introspection": "next_due() and recover() are meaningful",
}


def require(queue: WorkQueue, trait: str) -> None:
    if isinstance(queue, SqsQueue):
        pytest.skip(f"SQS does not promise that {EXTRA_TRAITS[trait]}")

A, B, C = MessageKey("s", "a"), MessageKey("s", "b"), MessageKey("s", "c")


async def test_claims_due_entries_oldest_due_first(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "ordered")
    await queue.enqueue(B, clock.now - timedelta(seconds=1))
    await queue.enqueue(A, clock.now - timedelta(seconds=2))
    await queue.enqueue(C, clock.now + timedelta(seconds=10))
    claims = await queue.claim(10, 30)
    assert [c.key for c in claims] == [A, B]
    assert len({c.receipt for c in claims}) == 2


async def test_claim_respects_limit(queue: WorkQueue, clock: FakeClock) -> None:
    for i in range(5):
        await queue.enqueue(MessageKey("s", f"m{i}"), clock.now)
    assert len(await queue.claim(3, 30)) == 3
    assert len(await queue.claim(3, 30)) == 2
    assert await queue.claim(3, 30) == []


async def test_claimed_entry_invisible_until_lease_ends(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "controllable_time")
    await queue.enqueue(A, clock.now)
    first = await queue.claim(1, 30)
    assert await queue.claim(1, 30) == []
    clock.advance(31)
    second = await queue.claim(1, 30)
    assert [c.key for c in second] == [A]
    assert second[0].receipt != first[0].receipt


async def test_complete_removes_and_stale_receipt_is_ignored(
    queue: WorkQueue, clock: FakeClock
) -> None:
    require(queue, "controllable_time")
    await queue.enqueue(A, clock.now)
    (old,) = await queue.claim(1, 30)
    clock.advance(31)
    (new,) = await queue.claim(1, 30)
    await queue.complete(old)  # lost its lease: no effect
    assert await queue.depth() == 1
    await queue.complete(new)
    assert await queue.depth() == 0


async def test_reschedule_makes_due_later(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "controllable_time")
    await queue.enqueue(A, clock.now)
    (claim,) = await queue.claim(1, 300)
    await queue.reschedule(claim, clock.now + timedelta(seconds=5))
    assert await queue.claim(1, 300) == []
    assert await queue.next_due() == pytest.approx(clock.now + timedelta(seconds=5),
                                                   abs=timedelta(milliseconds=1))
    clock.advance(5)
    assert [c.key for c in await queue.claim(1, 300)] == [A]


async def test_enqueue_is_idempotent_while_queued(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "idempotent_enqueue")
    await queue.enqueue(A, clock.now)
    await queue.enqueue(A, clock.now)
    assert await queue.depth() == 1
    assert len(await queue.claim(10, 30)) == 1


async def test_enqueue_makes_a_waiting_entry_due_sooner_never_later(
    queue: WorkQueue, clock: FakeClock
) -> None:
    """A message cancelled while it waited for a retry, then retried by hand, must not
    wait for the old entry's time (the entry is left for the worker to drop)."""
    require(queue, "idempotent_enqueue")
    await queue.enqueue(A, clock.now + timedelta(hours=2))
    await queue.enqueue(A, clock.now + timedelta(hours=3))
    assert await queue.claim(10, 30) == []
    await queue.enqueue(A, clock.now)
    assert [c.key for c in await queue.claim(10, 30)] == [A]
    assert await queue.depth() == 1


async def test_enqueue_leaves_a_leased_entry_to_its_holder(
    queue: WorkQueue, clock: FakeClock
) -> None:
    require(queue, "idempotent_enqueue")
    await queue.enqueue(A, clock.now)
    (claim,) = await queue.claim(1, 30)
    await queue.enqueue(A, clock.now)
    assert await queue.claim(10, 30) == []
    await queue.complete(claim)
    assert await queue.depth() == 0


async def test_enqueue_many_queues_each_entry(queue: WorkQueue, clock: FakeClock) -> None:
    keys = [MessageKey("s", f"many-{i}") for i in range(25)]  # SQS: three batch calls
    await queue.enqueue_many([Entry(k, clock.now, f"corr-{i}", "d.example:443")
                              for i, k in enumerate(keys)])
    claimed: list[Claim] = []
    for _ in range(10):
        claimed += await queue.claim(25, 30)
        if len(claimed) >= 25:
            break
    assert sorted(c.key for c in claimed) == sorted(keys)
    assert {c.destination for c in claimed} == {"d.example:443"}


async def test_enqueue_after_complete_queues_again(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.enqueue(A, clock.now)
    (claim,) = await queue.claim(1, 30)
    await queue.complete(claim)
    await queue.enqueue(A, clock.now)
    assert [c.key for c in await queue.claim(1, 30)] == [A]


async def test_recover_releases_leases_of_a_dead_process(
    queue: WorkQueue, clock: FakeClock
) -> None:
    require(queue, "introspection")
    await queue.enqueue(A, clock.now)
    await queue.enqueue(B, clock.now + timedelta(hours=1))
    await queue.claim(1, 3600)
    assert await queue.recover() == 1
    assert [c.key for c in await queue.claim(10, 30)] == [A]


async def test_next_due_and_depth(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "introspection")
    assert await queue.next_due() is None
    assert await queue.depth() == 0
    await queue.enqueue(A, clock.now + timedelta(seconds=9))
    await queue.enqueue(B, clock.now + timedelta(seconds=3))
    assert await queue.depth() == 2
    assert await queue.next_due() == pytest.approx(clock.now + timedelta(seconds=3),
                                                   abs=timedelta(milliseconds=1))


async def test_ping(queue: WorkQueue) -> None:
    await queue.ping()


async def test_claims_only_due_entries(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.enqueue(A, clock.now)
    await queue.enqueue(B, clock.now + timedelta(seconds=30))
    assert [c.key for c in await queue.claim(10, 30)] == [A]


async def test_lease_hides_then_returns_an_entry_in_real_time(
    queue: WorkQueue, clock: FakeClock
) -> None:
    """The same promise as the clock-driven test above, with a real one-second lease."""
    if not isinstance(queue, SqsQueue):
        pytest.skip("covered with a controlled clock above")
    await queue.enqueue(A, clock.now)
    (first,) = await queue.claim(1, 1)
    assert await queue.claim(1, 1) == []
    await asyncio.sleep(2.1)  # moto counts visibility in whole seconds
    (second,) = await queue.claim(1, 30)
    assert second.key == A
    assert second.receipt != first.receipt
    await queue.complete(second)
    await asyncio.sleep(2.1)
    assert await queue.claim(1, 30) == []


async def test_reschedule_in_real_time(queue: WorkQueue, clock: FakeClock) -> None:
    if not isinstance(queue, SqsQueue):
        pytest.skip("covered with a controlled clock above")
    await queue.enqueue(A, clock.now)
    (claim,) = await queue.claim(1, 30)
    await queue.reschedule(claim, clock.now + timedelta(seconds=1))
    assert await queue.claim(1, 30) == []
    await asyncio.sleep(2.1)
    assert [c.key for c in await queue.claim(1, 30)] == [A]


async def test_dead_letter_removes_the_entry(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.enqueue(A, clock.now)
    (claim,) = await queue.claim(1, 30)
    await queue.dead_letter(claim)
    assert await queue.claim(10, 30) == []
    if isinstance(queue, SqsQueue):
        # SQS keeps it in the dead-letter queue, for the DLQ alarm and inspection
        received = queue._sqs.receive_message(QueueUrl=queue._dlq_url, MaxNumberOfMessages=10)
        assert [SqsQueue.claim_of(m["Body"], "", clock.now).key
                for m in received["Messages"]] == [A]


# -- destinations: which entries a claim may take --------------------------------------------

P, Q, R = "p.example:443", "q.example:443", "r.example:443"


def require_selection(queue: WorkQueue) -> None:
    if isinstance(queue, SqsQueue):
        pytest.skip("SQS cannot select by destination: the Relay holds what a destination "
                    "cannot take (see test_lambdas_e2e)")


def slots_of(allowed: dict[str, int]) -> Callable[[DestinationKey], int]:
    return lambda key: allowed.get(key.name, 0)


async def test_claim_carries_the_destination(queue: WorkQueue, clock: FakeClock) -> None:
    await queue.enqueue(A, clock.now, None, P)
    (claim,) = await queue.claim(1, 30)
    assert claim.destination == P
    assert claim.destination_key == DestinationKey("s", P)


async def test_claim_skips_destinations_without_slots(queue: WorkQueue, clock: FakeClock) -> None:
    require_selection(queue)
    for i in range(5):
        await queue.enqueue(MessageKey("s", f"p{i}"), clock.now - timedelta(seconds=10), None, P)
    await queue.enqueue(MessageKey("s", "q0"), clock.now, None, Q)
    claims = await queue.claim(10, 30, slots_of({P: 0, Q: 3}))
    assert [c.key.message_id for c in claims] == ["q0"]
    # the skipped backlog was not leased: it is there for when P may start again
    claims = await queue.claim(10, 30, slots_of({P: 2}))
    assert [c.key.message_id for c in claims] == ["p0", "p1"]


async def test_small_destinations_are_not_stuck_behind_a_backlog(
    queue: WorkQueue, clock: FakeClock
) -> None:
    require_selection(queue)
    for i in range(20):  # older than the others: in due order they would all come first
        await queue.enqueue(MessageKey("s", f"p{i:02}"), clock.now - timedelta(seconds=60),
                            None, P)
    await queue.enqueue(MessageKey("s", "q0"), clock.now, None, Q)
    await queue.enqueue(MessageKey("s", "r0"), clock.now, None, R)
    claims = await queue.claim(6, 30, slots_of({P: 32, Q: 32, R: 32}))
    names = [c.destination for c in claims]
    assert names.count(Q) == 1
    assert names.count(R) == 1
    assert names.count(P) == 4


async def test_destinations_take_turns_across_claims(queue: WorkQueue, clock: FakeClock) -> None:
    require_selection(queue)
    for name in (P, Q, R):
        for i in range(3):
            await queue.enqueue(MessageKey("s", f"{name}-{i}"), clock.now, None, name)
    served = [(await queue.claim(1, 30, slots_of({P: 9, Q: 9, R: 9})))[0].destination
              for _ in range(6)]
    assert sorted(served[:3]) == sorted([P, Q, R])
    assert served[3:] == served[:3]


async def test_next_due_looks_only_at_destinations_that_may_start(
    queue: WorkQueue, clock: FakeClock
) -> None:
    require(queue, "introspection")
    await queue.enqueue(A, clock.now - timedelta(seconds=5), None, P)
    await queue.enqueue(B, clock.now + timedelta(seconds=7), None, Q)
    assert await queue.next_due(slots_of({P: 1, Q: 1})) == clock.now - timedelta(seconds=5)
    assert await queue.next_due(slots_of({Q: 1})) == clock.now + timedelta(seconds=7)
    assert await queue.next_due(slots_of({})) is None


async def test_rescheduled_entry_keeps_its_destination(queue: WorkQueue, clock: FakeClock) -> None:
    require(queue, "controllable_time")
    await queue.enqueue(A, clock.now, None, P)
    (claim,) = await queue.claim(1, 30)
    await queue.reschedule(claim, clock.now + timedelta(seconds=5))
    clock.advance(6)
    (again,) = await queue.claim(1, 30, slots_of({P: 1}))
    assert again.destination == P
