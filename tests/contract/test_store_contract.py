"""The MessageStore contract, run against every adapter (memory, SQLite file, ...)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.adapters.sqlite import SqliteStore
from notify_relay.domain.errors import StaleWrite
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.response import PartnerResponse
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from notify_relay.domain.status import Status
from notify_relay.ports import MessageStore, OutboxStore
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio


async def test_create_then_get_round_trips_every_field(store: MessageStore) -> None:
    message = make_message(body=bytes(range(256)) * 10)
    stored, created = await store.create(message)
    assert created
    fetched = await store.get(message.key)
    assert fetched is not None
    assert fetched == stored
    assert replace(fetched, version=0) == message


async def test_create_existing_returns_the_stored_one(store: MessageStore) -> None:
    first, _ = await store.create(make_message(body=b"first"))
    again, created = await store.create(make_message(body=b"second"))
    assert not created
    assert again == first
    assert again.content.body == b"first"


async def test_same_message_id_for_two_senders_is_two_messages(store: MessageStore) -> None:
    _, a = await store.create(make_message(sender_id="a"))
    _, b = await store.create(make_message(sender_id="b"))
    assert a
    assert b


async def test_get_unknown_is_none(store: MessageStore) -> None:
    assert await store.get(MessageKey("nobody", "nothing")) is None


async def test_concurrent_creates_store_once(store: MessageStore) -> None:
    results = await asyncio.gather(*(store.create(make_message(body=str(i).encode()))
                                     for i in range(20)))
    assert sum(created for _, created in results) == 1
    bodies = {m.content.body for m, _ in results}
    assert len(bodies) == 1


async def test_update_bumps_version_and_persists(store: MessageStore) -> None:
    stored, _ = await store.create(make_message())
    moved = stored.start_attempt(NOW)
    updated = await store.update(moved)
    assert updated.version == stored.version + 1
    finished = updated.finish_attempt(AttemptResult(status_code=503),
                                      Decision(Outcome.RETRY, NOW + timedelta(seconds=5)),
                                      started_at=NOW, duration_ms=12, now=NOW)
    await store.update(finished)
    fetched = await store.get(stored.key)
    assert fetched is not None
    assert fetched.status is Status.RETRYING
    assert fetched.attempts == finished.attempts
    assert fetched.next_attempt_at == NOW + timedelta(seconds=5)
    assert fetched.content.body == stored.content.body


async def test_update_with_stale_version_is_refused(store: MessageStore) -> None:
    stored, _ = await store.create(make_message())
    await store.update(stored.start_attempt(NOW))
    with pytest.raises(StaleWrite):
        await store.update(stored.mark_queued())
    fetched = await store.get(stored.key)
    assert fetched is not None
    assert fetched.status is Status.DELIVERING


async def test_only_one_of_two_concurrent_updates_wins(store: MessageStore) -> None:
    stored, _ = await store.create(make_message())
    results = await asyncio.gather(store.update(stored.start_attempt(NOW)),
                                   store.update(stored.mark_queued()), return_exceptions=True)
    assert sum(isinstance(r, StaleWrite) for r in results) == 1


async def test_update_of_missing_message_is_stale(store: MessageStore) -> None:
    with pytest.raises(StaleWrite):
        await store.update(make_message().with_version(1))


async def test_list_newest_first_with_cursor_paging(store: MessageStore) -> None:
    for i in range(7):
        await store.create(make_message(f"m-{i}", now=NOW + timedelta(seconds=i)))
    await store.create(make_message("other", sender_id="someone-else"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list("sender-a", None, 3, cursor)
        pages += 1
        seen += [m.key.message_id for m in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"m-{i}" for i in reversed(range(7))]
    assert pages == 3


async def test_list_exact_page_has_no_next_cursor(store: MessageStore) -> None:
    for i in range(3):
        await store.create(make_message(f"m-{i}"))
    page = await store.list("sender-a", None, 3, None)
    assert len(page.items) == 3
    assert page.next_cursor is None


async def test_list_filters_by_status(store: MessageStore) -> None:
    a, _ = await store.create(make_message("a"))
    await store.create(make_message("b"))
    await store.update(a.start_attempt(NOW))
    page = await store.list("sender-a", Status.DELIVERING, 10, None)
    assert [m.key.message_id for m in page.items] == ["a"]
    page = await store.list("sender-a", Status.QUEUED, 10, None)
    assert [m.key.message_id for m in page.items] == ["b"]


async def test_list_rejects_a_forged_cursor(store: MessageStore) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.list("sender-a", None, 3, "not-a-cursor!!")


def skip_if_outbox(store: MessageStore) -> None:
    if isinstance(store, OutboxStore):
        pytest.skip("the store's outbox queues each write that marks a message queued: no "
                    "stored-but-unqueued gap to find (tests/aws/test_outbox.py)")


async def test_unqueued_finds_the_dual_write_gap(store: MessageStore) -> None:
    skip_if_outbox(store)
    gap, _ = await store.create(make_message("gap", now=NOW))
    queued, _ = await store.create(make_message("queued", now=NOW))
    await store.update(queued.mark_queued())
    await store.create(make_message("fresh", now=NOW + timedelta(seconds=60)))
    found = await store.unqueued(NOW + timedelta(seconds=30), 10)
    assert [m.key.message_id for m in found] == ["gap"]
    assert found[0].content.body == gap.content.body


async def test_unqueued_finds_a_hand_retry_whose_enqueue_failed(store: MessageStore) -> None:
    """Issue 8's reproduction: a FAILED message retried by hand is QUEUED and not queued
    until its enqueue succeeds; if that fails, the reconciler must still find it. The
    DynamoDB adapter only ever removed its unqueued index entry, so it could not (it now
    has an outbox instead)."""
    skip_if_outbox(store)
    stored, _ = await store.create(make_message("again", now=NOW, max_attempts=1))
    message = await store.update(stored.mark_queued())
    message = await store.update(message.start_attempt(NOW))
    message = await store.update(message.finish_attempt(
        AttemptResult(status_code=500), Decision(Outcome.GIVE_UP), started_at=NOW,
        duration_ms=1, now=NOW))
    assert message.status is Status.FAILED
    assert await store.unqueued(NOW + timedelta(seconds=30), 10) == []
    retried = await store.update(message.retry_by_hand(NOW))  # then the SQS send fails
    found = await store.unqueued(NOW + timedelta(seconds=30), 10)
    assert [m.key.message_id for m in found] == ["again"]
    assert found[0].version == retried.version


async def _failed(store: MessageStore, message_id: str, failed_at: datetime,
                  url: str = "https://partner.example/hook") -> Message:
    stored, _ = await store.create(make_message(message_id, now=NOW, max_attempts=1, url=url))
    message = await store.update(stored.start_attempt(NOW))
    return await store.update(message.finish_attempt(
        AttemptResult(status_code=500), Decision(Outcome.GIVE_UP), started_at=failed_at,
        duration_ms=1, now=failed_at))


async def test_failed_between_selects_by_failure_time_and_destination(
    store: MessageStore,
) -> None:
    for i in range(4):
        await _failed(store, f"f-{i}", NOW + timedelta(minutes=i))
    await _failed(store, "other", NOW + timedelta(minutes=1), url="https://other.example/x")
    await store.create(make_message("waiting", now=NOW))
    found = await store.failed_between("sender-a", None, NOW + timedelta(minutes=1),
                                       NOW + timedelta(minutes=3), 10)
    assert sorted(m.key.message_id for m in found) == ["f-1", "f-2", "other"]
    assert all(m.status is Status.FAILED for m in found)
    only = await store.failed_between("sender-a", "partner.example:443", NOW,
                                      NOW + timedelta(hours=1), 10)
    assert sorted(m.key.message_id for m in only) == ["f-0", "f-1", "f-2", "f-3"]
    assert len(await store.failed_between("sender-a", None, NOW, NOW + timedelta(hours=1),
                                          2)) == 2
    assert await store.failed_between("sender-b", None, NOW, NOW + timedelta(hours=1),
                                      10) == []


async def test_failed_between_takes_a_window_in_any_time_zone(store: MessageStore) -> None:
    """Stored times are UTC text: a window given with an offset must still select by the
    instant (SQLite and DynamoDB compare the text)."""
    await _failed(store, "noon", NOW)  # 12:00 UTC
    plus_two = timezone(timedelta(hours=2))
    around = await store.failed_between("sender-a", None,
                                        (NOW - timedelta(minutes=30)).astimezone(plus_two),
                                        (NOW + timedelta(minutes=30)).astimezone(plus_two), 10)
    assert [m.key.message_id for m in around] == ["noon"]
    after = await store.failed_between("sender-a", None,
                                       (NOW + timedelta(minutes=30)).astimezone(plus_two),
                                       (NOW + timedelta(hours=3)).astimezone(plus_two), 10)
    assert after == []


async def test_failed_between_leaves_out_what_is_no_longer_failed(store: MessageStore) -> None:
    message = await _failed(store, "again", NOW)
    await store.update(message.retry_by_hand(NOW))
    assert await store.failed_between("sender-a", None, NOW, NOW + timedelta(hours=1),
                                      10) == []


async def test_attempt_response_round_trips(store: MessageStore) -> None:
    stored, _ = await store.create(make_message())
    response = PartnerResponse((("content-type", "text/plain"), ("location", "/x")),
                               "no such account \ufffd", True)
    message = await store.update(stored.start_attempt(NOW))
    message = await store.update(message.finish_attempt(
        AttemptResult(status_code=400, response=response), Decision(Outcome.GIVE_UP),
        started_at=NOW, duration_ms=1, now=NOW))
    fetched = await store.get(stored.key, with_body=False)
    assert fetched is not None
    assert fetched.attempts[-1].response == response


async def test_cancelled_round_trips(store: MessageStore) -> None:
    stored, _ = await store.create(make_message())
    await store.update(stored.cancel(NOW))
    fetched = await store.get(stored.key)
    assert fetched is not None
    assert fetched.status is Status.CANCELLED
    page = await store.list("sender-a", Status.CANCELLED, 10, None)
    assert [m.key for m in page.items] == [stored.key]


async def test_callback_and_schedule_round_trip_and_notices_are_not_listed(
    store: MessageStore,
) -> None:
    message = replace(make_message(), callback_url="https://cb.example/hook",
                      next_attempt_at=NOW + timedelta(days=2))
    stored, _ = await store.create(message)
    noticed = await store.update(replace(stored, callback_notice=1))
    fetched = await store.get(stored.key)
    assert fetched is not None
    assert (fetched.callback_url, fetched.callback_notice) == ("https://cb.example/hook", 1)
    assert fetched.next_attempt_at == NOW + timedelta(days=2)
    assert fetched.version == noticed.version
    await store.create(make_message("m-1~callback~1"))
    page = await store.list("sender-a", None, 10, None)
    assert [m.key.message_id for m in page.items] == ["m-1"]


async def test_expire_deletes_only_final_messages_past_the_window(store: MessageStore) -> None:
    if isinstance(store, DynamoStore):
        pytest.skip("DynamoDB expires items by its TTL (expiresAt), not by expire()")
    old_done = await _failed(store, "old-failed", NOW)
    delivered, _ = await store.create(make_message("old-delivered", now=NOW))
    delivered = await store.update(delivered.start_attempt(NOW))
    await store.update(delivered.finish_attempt(
        AttemptResult(status_code=200), Decision(Outcome.SUCCESS), started_at=NOW,
        duration_ms=1, now=NOW))
    cancelled, _ = await store.create(make_message("old-cancelled", now=NOW))
    await store.update(cancelled.cancel(NOW))
    await store.create(make_message("old-waiting", now=NOW))  # QUEUED since then
    await _failed(store, "recent-failed", NOW + timedelta(days=2))
    cut = NOW + timedelta(days=1)
    assert await store.expire(cut, 2) == 2  # a batch at a time
    assert await store.expire(cut, 10) == 1
    assert await store.expire(cut, 10) == 0
    for gone in ("old-failed", "old-delivered", "old-cancelled"):
        assert await store.get(MessageKey("sender-a", gone)) is None
    assert await store.get(MessageKey("sender-a", "old-waiting")) is not None
    assert await store.get(MessageKey("sender-a", "recent-failed")) is not None
    # the id may be used again (contract: reads then answer 404; the id is free)
    _, created = await store.create(make_message("old-failed", now=NOW))
    assert created
    assert old_done.key == MessageKey("sender-a", "old-failed")


async def test_ping(store: MessageStore) -> None:
    await store.ping()


async def test_get_without_body_has_the_same_state(store: MessageStore) -> None:
    stored, _ = await store.create(make_message(body=b"b" * 300_000))
    light = await store.get(stored.key, with_body=False)
    assert light is not None
    assert replace(light, content=stored.content) == stored
    if isinstance(store, SqliteStore):  # the BLOB is not even read
        assert light.content.body is None


async def test_second_create_of_a_key_is_refused_by_the_condition(store: MessageStore) -> None:
    """The sequential form of the race above: the condition, not the order, decides."""
    first, created = await store.create(make_message(body=b"one"))
    assert created
    for _ in range(3):
        again, created = await store.create(make_message(body=b"two"))
        assert not created
        assert again.content.body == first.content.body
