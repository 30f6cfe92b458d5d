"""QueueInStore: a message and its queue entry change in one transaction.

Run on every adapter that has it (the SQLite store, with the SQLite queue on the same file);
the Relay's use of it is covered by the e2e and crash tests, which run on SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, SqliteQueue, SqliteStore
from notify_relay.domain.errors import StaleWrite, StoreUnavailable
from notify_relay.domain.message import Message
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from notify_relay.domain.status import Status
from notify_relay.ports import QueueInStore, StartingQueue, WorkQueue
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio
T = TypeVar("T")


@pytest.fixture(params=["sqlite"])
def pair(sqlite_db: SqliteDatabase) -> tuple[QueueInStore, WorkQueue]:
    store = SqliteStore(sqlite_db)
    assert isinstance(store, QueueInStore)
    return store, SqliteQueue(sqlite_db)


async def test_a_new_message_is_stored_queued_with_its_entry(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = pair
    stored, created = await store.create_queued(make_message("q-1"))
    assert created
    assert stored.queued
    assert stored.version == 1
    (claim,) = await queue.claim(10, 30.0)
    assert claim.key == stored.key


async def test_a_repeat_is_returned_untouched_and_queues_nothing(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = pair
    first, _ = await store.create_queued(make_message("q-1"))
    (claim,) = await queue.claim(10, 30.0)  # leased: a second entry would be claimable
    again, created = await store.create_queued(make_message("q-1"))
    assert not created
    assert (again.version, again.queued) == (first.version, True)
    assert await queue.claim(10, 30.0) == []
    assert await queue.depth() == 1
    await queue.complete(claim)


async def test_a_scheduled_message_is_due_at_its_next_attempt(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = pair
    due = NOW + timedelta(days=3650)
    await store.create_queued(replace(make_message("later"), next_attempt_at=due))
    assert await queue.claim(10, 30.0) == []
    next_due = await queue.next_due()
    assert next_due is not None
    assert abs((next_due - due).total_seconds()) < 0.001


async def outcome(store: QueueInStore, queue: WorkQueue, result: AttemptResult,
                  decision: Decision) -> None:
    stored, _ = await store.create_queued(make_message("s-1"))
    (claim,) = await queue.claim(10, 30.0)
    assert isinstance(store, SqliteStore)
    started = await store.update(stored.start_attempt(NOW))
    finished = started.finish_attempt(result, decision, started_at=NOW, duration_ms=1, now=NOW)
    written = await store.update_settled(finished, claim)
    assert written.version == started.version + 1
    assert (await store.get(stored.key)).status is finished.status  # type: ignore[union-attr]


async def test_a_retry_makes_the_entry_due_at_the_next_attempt(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = pair
    retry_at = NOW + timedelta(days=3650)
    await outcome(store, queue, AttemptResult(status_code=503), Decision(Outcome.RETRY, retry_at))
    assert await queue.claim(10, 30.0) == []  # released, but not due before its time
    next_due = await queue.next_due()
    assert next_due is not None
    assert abs((next_due - retry_at).total_seconds()) < 0.001


@pytest.mark.parametrize(("result", "decision", "status"), [
    (AttemptResult(status_code=200), Decision(Outcome.SUCCESS), Status.DELIVERED),
    (AttemptResult(status_code=400), Decision(Outcome.GIVE_UP), Status.FAILED),
])
async def test_a_final_outcome_drops_the_entry(
    pair: tuple[QueueInStore, WorkQueue], result: AttemptResult, decision: Decision,
    status: Status,
) -> None:
    store, queue = pair
    await outcome(store, queue, result, decision)
    assert await queue.depth() == 0


async def test_a_stale_outcome_changes_neither(pair: tuple[QueueInStore, WorkQueue]) -> None:
    store, queue = pair
    stored, _ = await store.create_queued(make_message("s-1"))
    (claim,) = await queue.claim(10, 30.0)
    assert isinstance(store, SqliteStore)
    await store.update(stored.start_attempt(NOW))
    stale = stored.start_attempt(NOW).finish_attempt(  # written from the version before
        AttemptResult(status_code=200), Decision(Outcome.SUCCESS), started_at=NOW,
        duration_ms=1, now=NOW)
    with pytest.raises(StaleWrite):
        await store.update_settled(stale, claim)
    assert (await store.get(stored.key)).status is Status.DELIVERING  # type: ignore[union-attr]
    assert await queue.depth() == 1  # the entry stays leased to its claim
    assert await queue.claim(10, 30.0) == []


async def test_a_retry_by_hand_is_stored_queued_with_its_entry(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = pair
    await outcome(store, queue, AttemptResult(status_code=400), Decision(Outcome.GIVE_UP))
    (failed,) = await store.failed_between("sender-a", None, NOW - timedelta(days=1),
                                           NOW + timedelta(days=1), 10)
    assert await queue.depth() == 0
    stale = failed.with_version(failed.version - 1)
    with pytest.raises(StaleWrite):  # over a version gone: neither changes
        await store.update_queued(stale.retry_by_hand(NOW).mark_queued(), NOW)
    assert await queue.depth() == 0
    retried = await store.update_queued(failed.retry_by_hand(NOW).mark_queued(), NOW)
    assert (retried.status, retried.queued, retried.version) == (
        Status.QUEUED, True, failed.version + 1)
    (claim,) = await queue.claim(10, 30.0)  # queued in the same write
    assert claim.key == failed.key


async def test_a_failed_commit_keeps_neither(pair: tuple[QueueInStore, WorkQueue],
                                             sqlite_db: SqliteDatabase) -> None:
    """One transaction: a message never stands stored without its entry, nor the reverse."""
    store, queue = pair
    sqlite_db._connection().execute("PRAGMA query_only = ON")  # every write now fails
    with pytest.raises(StoreUnavailable):
        await store.create_queued(make_message("lost"))
    sqlite_db._connection().execute("PRAGMA query_only = OFF")
    assert await store.get(make_message("lost").key) is None
    assert await queue.depth() == 0


def starting(pair: tuple[QueueInStore, WorkQueue]) -> tuple[SqliteStore, StartingQueue]:
    store, queue = pair
    assert isinstance(store, SqliteStore)
    assert isinstance(queue, StartingQueue)
    return store, queue


async def status_and_version(store: SqliteStore, message: Message) -> tuple[Status, int]:
    """What the store holds of `message` now."""
    read = await store.get(message.key)
    assert read is not None
    return read.status, read.version


async def test_claim_started_starts_the_attempt_in_the_claims_transaction(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = starting(pair)
    stored, _ = await store.create_queued(make_message("c-1"))
    seen: list[Message] = []

    def start(message: Message) -> Message | None:
        seen.append(message)
        return message.start_attempt(NOW)

    (claim,) = await queue.claim_started(10, 30.0, None, start)
    assert claim.key == stored.key
    assert claim.started is not None
    assert claim.started.before == seen[0]
    assert (claim.started.before.status, claim.started.before.version) == (Status.QUEUED, 1)
    assert (claim.started.after.status, claim.started.after.version) == (Status.DELIVERING, 2)
    assert await status_and_version(store, stored) == (Status.DELIVERING, 2)
    assert await queue.claim(10, 30.0) == []  # and leased, in the same write
    # the attempt's outcome is written over the version the claim returned
    finished = claim.started.after.finish_attempt(
        AttemptResult(status_code=200), Decision(Outcome.SUCCESS), started_at=NOW,
        duration_ms=1, now=NOW)
    assert (await store.update_settled(finished, claim)).version == 3
    assert await queue.depth() == 0


async def test_claim_started_leaves_what_start_declines_untouched(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    store, queue = starting(pair)
    stored, _ = await store.create_queued(make_message("c-1"))
    (claim,) = await queue.claim_started(10, 30.0, None, lambda message: None)
    assert claim.started is None
    assert await status_and_version(store, stored) == (Status.QUEUED, 1)


async def test_claim_started_leaves_an_unreadable_message_to_the_relay(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    store, queue = starting(pair)
    await store.create_queued(make_message("bad"))
    await sqlite_db.write(lambda conn: conn.execute("UPDATE messages SET doc = x'00'"))
    (claim,) = await queue.claim_started(10, 30.0, None, lambda message: message)
    assert claim.started is None  # deliver() reads it, fails, and quarantines it


async def test_claim_started_pairs_each_entry_with_its_own_message(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    """The messages come in the claim's own read of the entries: per destination (the
    worker's slots) and whole, each claim starts its own message's attempt and body, and
    an entry whose message is gone is claimed without a start."""
    store, queue = starting(pair)
    for n, url in enumerate(["https://a.example/h", "https://b.example/h",
                             "https://a.example/h"]):
        await store.create_queued(make_message(f"m-{n}", url=url, body=b'{"n":%d}' % n))
    await queue.enqueue(make_message("gone").key, NOW - timedelta(seconds=1))

    claims = await queue.claim_started(10, 30.0, lambda key: 5,
                                       lambda message: message.start_attempt(NOW))
    started = {c.key.message_id: c.started for c in claims}
    assert set(started) == {"m-0", "m-1", "m-2", "gone"}
    assert started["gone"] is None
    for n in range(3):
        claim = started[f"m-{n}"]
        assert claim is not None
        assert claim.after.key.message_id == f"m-{n}"
        assert claim.after.content.body == b'{"n":%d}' % n
        assert claim.after.status is Status.DELIVERING
    assert {c.destination for c in claims if c.key.message_id != "gone"} == {
        "a.example:443", "b.example:443"}
    assert await queue.claim(10, 30.0) == []  # every one leased


@pytest.mark.parametrize("slots", [None, lambda key: 5], ids=["whole", "per-destination"])
async def test_claim_started_tells_apart_two_senders_messages_of_one_id(
    pair: tuple[QueueInStore, WorkQueue], slots: object
) -> None:
    """A message id is a sender's own: the claim's read joins each entry with the message
    of its sender and id, in both of the claim's reads."""
    store, queue = starting(pair)
    for sender in ("sender-a", "sender-b"):
        await store.create_queued(make_message("same", sender, body=sender.encode()))
    claims = await queue.claim_started(10, 30.0, slots,  # type: ignore[arg-type]
                                       lambda message: message.start_attempt(NOW))
    assert sorted(c.key.sender_id for c in claims) == ["sender-a", "sender-b"]
    for claim in claims:
        assert claim.started is not None
        assert claim.started.after.key == claim.key
        assert claim.started.after.content.body == claim.key.sender_id.encode()


def between_read_and_write(db: SqliteDatabase, change: Callable[[], Awaitable[object]]) -> None:
    """Makes `change` land after the claim's read of the due entries and before its write,
    as a write of the other process (the API's) can."""
    read = db.read

    async def read_then_change(fn: Callable[[sqlite3.Connection], T]) -> T:
        result = await read(fn)
        db.read = read  # type: ignore[method-assign]
        await change()
        return result

    db.read = read_then_change  # type: ignore[method-assign]


async def test_claim_started_does_not_take_an_entry_cancelled_after_its_read(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    store, queue = starting(pair)
    stored, _ = await store.create_queued(make_message("c-1"))
    between_read_and_write(sqlite_db, lambda: store.update_dequeued(stored.cancel(NOW)))
    assert await queue.claim_started(10, 30.0, None,
                                     lambda message: message.start_attempt(NOW)) == []
    assert await status_and_version(store, stored) == (Status.CANCELLED, 2)
    assert await queue.depth() == 0


async def test_claim_started_does_not_take_an_entry_another_claim_took_after_its_read(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    store, queue = starting(pair)
    stored, _ = await store.create_queued(make_message("c-1"))
    other: list[object] = []

    async def claim_first() -> None:
        other.extend(await queue.claim(10, 30.0))

    between_read_and_write(sqlite_db, claim_first)
    assert await queue.claim_started(10, 30.0, None,
                                     lambda message: message.start_attempt(NOW)) == []
    assert len(other) == 1
    assert await status_and_version(store, stored) == (Status.QUEUED, 1)  # not started


async def test_claim_started_starts_a_message_changed_after_its_read_as_it_is_now(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """Its entry still due, the claim takes it and starts the message as its write reads it
    (a retry by hand writes three times; a replay too): never over the change, and with the
    body the claim's bound counts."""
    store, queue = starting(pair)
    stored, _ = await store.create_queued(make_message("c-1"))
    changed = stored.changed(correlation_id="corr-2")
    between_read_and_write(sqlite_db, lambda: store.update(changed))
    (claim,) = await queue.claim_started(10, 30.0, None,
                                         lambda message: message.start_attempt(NOW))
    assert claim.key == stored.key
    assert claim.started is not None
    assert claim.started.before.correlation_id == "corr-2"
    assert (claim.started.before.version, claim.started.after.version) == (2, 3)
    assert claim.started.after.content.body == stored.content.body
    assert await status_and_version(store, stored) == (Status.DELIVERING, 3)
    assert await queue.claim(10, 30.0) == []  # leased in the same write


async def test_claim_started_never_starts_a_deleted_message_over_its_successor(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """Between the read and the write the message is cancelled, retention deletes it and
    the same id is submitted again: version 1 again, and its entry may get the deleted one's
    rowid. The start read for the old one must not be written over the new one (helper-62's
    review): the new one is started as it is."""
    store, queue = starting(pair)
    old, _ = await store.create_queued(make_message("c-1", url="https://old.example/h",
                                                    body=b'{"old":1}'))

    async def cancel_expire_resubmit() -> None:
        await store.update_dequeued(old.cancel(NOW))
        assert await store.expire(NOW + timedelta(days=1), 10) == 1
        await store.create_queued(make_message("c-1", url="https://new.example/h",
                                               body=b'{"new":1}'))

    between_read_and_write(sqlite_db, cancel_expire_resubmit)
    claims = await queue.claim_started(10, 30.0, None,
                                       lambda message: message.start_attempt(NOW))
    held = await store.get(old.key)
    assert held is not None
    assert held.content.target_url == "https://new.example/h"
    assert held.content.body == b'{"new":1}'
    for claim in claims:  # taken (its rowid reused) or not: never as the old one
        assert claim.started is not None
        assert claim.started.after.content.target_url == "https://new.example/h"
        assert claim.started.after.content.body == b'{"new":1}'


async def test_a_destination_whose_entries_another_claim_took_keeps_its_turn(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """Destinations take turns (least recently served first): one whose entries the claim
    read but did not take (another claim did, in between) has not been served."""
    store, queue = starting(pair)
    for name in ("a", "b"):
        await store.create_queued(make_message(f"{name}-1", url=f"https://{name}.example/h"))
    other = SqliteQueue(sqlite_db)

    async def b_taken() -> None:
        await other.claim(10, 30.0, lambda key: 5 if key.name == "b.example:443" else 0)

    between_read_and_write(sqlite_db, b_taken)
    (first,) = await queue.claim_started(10, 30.0, lambda key: 5,
                                         lambda message: message.start_attempt(NOW))
    assert first.key.message_id == "a-1"
    for name in ("a", "b"):
        await store.create_queued(make_message(f"{name}-2", url=f"https://{name}.example/h"))
    (second,) = await queue.claim_started(1, 30.0, lambda key: 5,
                                          lambda message: message.start_attempt(NOW))
    assert second.key.message_id == "b-2"  # b has not had its turn yet; a has


async def test_claim_started_takes_what_came_due_while_its_write_waited(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """Its write reads again for what came due meanwhile (paced, a claim of only what its
    read found took half as many a claim), within the claim's limit."""
    store, queue = starting(pair)
    await store.create_queued(make_message("first"))
    between_read_and_write(sqlite_db, lambda: store.create_queued(make_message("second")))
    claims = await queue.claim_started(10, 30.0, None,
                                       lambda message: message.start_attempt(NOW))
    assert sorted(c.key.message_id for c in claims) == ["first", "second"]
    assert all(c.started is not None for c in claims)
    assert await status_and_version(store, make_message("second")) == (Status.DELIVERING, 2)
    assert await queue.claim(10, 30.0) == []  # both leased


async def test_each_entry_a_claim_takes_has_a_receipt_of_its_own(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """A claim's receipts come from one draw of randomness, cut up: each ends its own
    entry's lease and no other's, whichever way the claim took the entry (its read, its
    write's second read, a claim without a start)."""
    store, queue = starting(pair)
    for i in range(3):
        await store.create_queued(make_message(f"read-{i}"))
    between_read_and_write(sqlite_db, lambda: store.create_queued(make_message("more")))
    claims = list(await queue.claim_started(10, 30.0, None,
                                            lambda message: message.start_attempt(NOW)))
    await store.create_queued(make_message("plain"))
    claims += await queue.claim(10, 30.0)
    receipts = [claim.receipt for claim in claims]
    assert len(set(receipts)) == len(claims) == 5
    assert all(len(r) == 16 and int(r, 16) >= 0 for r in receipts)
    await queue.complete(replace(claims[0], receipt=receipts[1]))  # another's: nothing
    assert await queue.depth() == 5
    for left, claim in enumerate(claims[::-1]):
        await queue.complete(claim)
        assert await queue.depth() == 4 - left


async def test_claim_started_takes_no_more_than_its_limit_or_a_destination_s_slots(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    store, queue = starting(pair)
    await store.create_queued(make_message("a-1", url="https://a.example/h"))

    async def two_more() -> None:
        await store.create_queued(make_message("a-2", url="https://a.example/h"))
        await store.create_queued(make_message("b-1", url="https://b.example/h"))

    between_read_and_write(sqlite_db, two_more)
    claims = await queue.claim_started(10, 30.0, lambda key: 1,  # one attempt a destination
                                       lambda message: message.start_attempt(NOW))
    assert sorted(c.key.message_id for c in claims) == ["a-1", "b-1"]  # not a-2
    await store.create_queued(make_message("c-1", url="https://c.example/h"))
    between_read_and_write(sqlite_db, lambda: store.create_queued(
        make_message("d-1", url="https://d.example/h")))
    (claim,) = await queue.claim_started(1, 30.0, None,
                                         lambda message: message.start_attempt(NOW))
    assert claim.key.message_id in {"a-2", "c-1"}  # the limit: one


async def test_claim_started_takes_nothing_more_past_its_body_bound(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """The write's second read keeps to what the claim's bound has left, and does not take
    one message past it as a claim's first read may. (Each message's document, about 600
    bytes, counts too: see the next test.)"""
    store, queue = starting(pair)
    await store.create_queued(make_message("m-1", body=b"1" * 60_000))
    between_read_and_write(sqlite_db, lambda: store.create_queued(
        make_message("m-2", body=b"2" * 60_000)))
    (claim,) = await queue.claim_started(10, 30.0, None,
                                         lambda message: message.start_attempt(NOW), 100_000)
    assert claim.key.message_id == "m-1"
    await store.create_queued(make_message("m-3", body=b"3" * 30_000))
    between_read_and_write(sqlite_db, lambda: store.create_queued(
        make_message("m-4", body=b"4" * 30_000)))
    claims = await queue.claim_started(10, 30.0, None,
                                       lambda message: message.start_attempt(NOW), 100_000)
    assert [c.key.message_id for c in claims] == ["m-2", "m-3"]  # 60 + 30 KB: m-4 waits


async def test_claim_started_counts_a_message_s_headers_against_its_bound(
    pair: tuple[QueueInStore, WorkQueue]
) -> None:
    """Headers are bounded only by the request's 6 MiB: counted with the bodies, a claim of
    messages with big headers and no body stops at its bound as one of big bodies does
    (uncounted, a claim would read up to 64 of 6 MiB on the event loop and copy each in its
    write's savepoint). Started, each has its headers whole."""
    store, queue = starting(pair)
    for i in range(3):
        plain = make_message(f"h-{i}", body=None)
        await store.create_queued(plain.changed(content=replace(
            plain.content, headers=(("X-Big", str(i) * 1_500_000),))))
    claims = await queue.claim_started(10, 30.0, None,
                                       lambda message: message.start_attempt(NOW), 4_000_000)
    assert [c.key.message_id for c in claims] == ["h-0", "h-1"]  # 3 MB: a third is past
    assert all(c.started is not None
               and c.started.after.content.headers[0][1] == c.key.message_id[-1] * 1_500_000
               for c in claims)
    (last,) = await queue.claim_started(10, 30.0, None,
                                        lambda message: message.start_attempt(NOW), 4_000_000)
    assert last.key.message_id == "h-2"


async def test_claim_started_takes_nothing_more_past_a_destination_s_bound(
    pair: tuple[QueueInStore, WorkQueue], sqlite_db: SqliteDatabase
) -> None:
    """Per destination too (helper-63's review): what the first read took of a destination
    counts, and a destination new to the second read gets no first message past its bound."""
    store, queue = starting(pair)
    await store.create_queued(make_message("a-1", url="https://a.example/h", body=b"1" * 600))

    async def two_more() -> None:
        await store.create_queued(make_message("a-2", url="https://a.example/h",
                                               body=b"2" * 600))
        await store.create_queued(make_message("b-1", url="https://b.example/h",
                                               body=b"3" * 1200))

    between_read_and_write(sqlite_db, two_more)
    claims = await queue.claim_started(10, 30.0, lambda key: 5,
                                       lambda message: message.start_attempt(NOW), 100_000,
                                       lambda key: 1000)
    assert [c.key.message_id for c in claims] == ["a-1"]  # a-2: 1,200 of a; b-1: 1,200 of b


async def test_claim_started_never_takes_twice_what_its_write_leased(
    sqlite_db: SqliteDatabase
) -> None:
    """The write's second read is due by its own time, but never by the lease the write
    just gave: a clock past it (a step, a pause) would take those entries again, under
    another receipt (helper-63's review)."""
    times = iter([NOW, NOW] + [NOW + timedelta(seconds=100)] * 10)
    store = SqliteStore(sqlite_db)
    queue = SqliteQueue(sqlite_db, clock=lambda: next(times))
    await store.create_queued(make_message("a-1"))
    claims = await queue.claim_started(10, 30.0, None,
                                       lambda message: message.start_attempt(NOW))
    assert [c.key.message_id for c in claims] == ["a-1"]
