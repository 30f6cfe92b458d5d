"""The DynamoDB adapters' list cursors are LastEvaluatedKeys: a forged one is InvalidCursor
(a 400), never a DynamoDB ValidationException (a 500), and never another sender's page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from notify_relay.adapters.aws import dynamodb as dynamodb_module
from notify_relay.adapters.aws.destinations import DynamoDestinationStore
from notify_relay.adapters.aws.dynamodb import BATCH_GET_TRIES, DynamoStore
from notify_relay.adapters.paging import encode_cursor
from notify_relay.domain.destination import Destination, DestinationKey
from notify_relay.domain.errors import InvalidCursor, StoreUnavailable
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from notify_relay.domain.status import Status
from tests.aws.moto import AwsResources, client
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio

FORGED_MESSAGE_KEYS: list[Any] = [
    {"sender": "other", "status": None, "after": "x"},  # another sender's
    {"sender": "s", "status": "FAILED", "after": "x"},  # another filter's
    {"sender": "s", "status": None, "after": "x", "extra": 1},
    {"sender": "s", "status": None},
    {"sender": "s", "status": None, "after": 1},
    {"sender": "s", "status": None, "after": ""},
    {"pk": {"S": "s#m"}, "sender": {"S": "s"}, "sortKey": {"S": "x"}},  # the old format
    ["s"],
    "s",
]
FORGED_DESTINATION_KEYS: list[Any] = [
    {"pk": {"S": "other"}, "sk": {"S": "a:1"}},
    {"pk": {"S": "s"}, "sk": {"N": "1"}},
    {"pk": {"S": "s"}},
    {"pk": "s", "sk": "a:1"},
    {"pk": {"S": "s"}, "sk": {"S": ""}},  # DynamoDB refuses an empty key (moto does not)
    [1],
]


def stores(aws: AwsResources) -> tuple[DynamoStore, DynamoDestinationStore]:
    dynamodb = client("dynamodb", aws.endpoint)
    return (DynamoStore(dynamodb, aws.table, client("s3", aws.endpoint), aws.bucket,
                        destinations_table=aws.destinations_table),
            DynamoDestinationStore(dynamodb, aws.destinations_table, aws.table))


async def test_forged_message_cursors_are_refused(aws: AwsResources) -> None:
    messages, _ = stores(aws)
    for i in range(3):
        await messages.create(make_message(f"m-{i}", "s"))
    page = await messages.list("s", None, 2, None)
    assert page.next_cursor is not None
    assert len((await messages.list("s", None, 2, page.next_cursor)).items) == 1
    for key in FORGED_MESSAGE_KEYS:
        with pytest.raises(InvalidCursor):
            await messages.list("s", None, 10, encode_cursor(key))
    with pytest.raises(InvalidCursor):  # a cursor of the unfiltered list, with a filter
        await messages.list("s", Status.QUEUED, 10, page.next_cursor)


async def test_forged_destination_cursors_are_refused(aws: AwsResources) -> None:
    _, destinations = stores(aws)
    for name in ("a:1", "b:1", "c:1"):
        await destinations.save(Destination(DestinationKey("s", name)))
    page = await destinations.list("s", None, 2, None)
    assert page.next_cursor is not None
    assert [d.key.name for d in (await destinations.list("s", None, 2, page.next_cursor)).items
            ] == ["c:1"]
    for key in FORGED_DESTINATION_KEYS:
        with pytest.raises(InvalidCursor):
            await destinations.list("s", None, 10, encode_cursor(key))


async def test_pages_across_shards_come_newest_first_without_gaps_or_repeats(
    aws: AwsResources,
) -> None:
    """A sender's messages are spread over SENDER_SHARDS index keys: each page merges
    them, and following the cursors yields every message once, newest first."""
    messages, _ = stores(aws)
    stored = []
    for i in range(45):
        message, _ = await messages.create(
            make_message(f"m-{i:02d}", "s", now=NOW + timedelta(seconds=i)))
        stored.append(message)
    await messages.create(make_message("m-00~callback~1", "s"))  # a notice: never listed
    await messages.create(make_message("x-1", "other"))  # another sender's
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await messages.list("s", None, 10, cursor)
        seen += [m.key.message_id for m in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"m-{i:02d}" for i in reversed(range(45))]
    assert pages == 5
    queued = await messages.list("s", Status.QUEUED, 500, None)
    assert len(queued.items) == 45
    assert queued.next_cursor is None
    delivered = await messages.list("s", Status.DELIVERED, 10, None)
    assert (delivered.items, delivered.next_cursor) == ([], None)


async def _failed(store: DynamoStore, message_id: str, at: datetime) -> None:
    stored, _ = await store.create(make_message(message_id, "s", now=at, max_attempts=1))
    started = await store.update(stored.start_attempt(at))
    await store.update(started.finish_attempt(
        AttemptResult(status_code=500), Decision(Outcome.GIVE_UP), started_at=at,
        duration_ms=1, now=at))


async def test_a_filtered_page_leaves_out_what_changed_status_since_the_index_was_read(
    aws: AwsResources, monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages, _ = stores(aws)
    for i in range(3):
        await _failed(messages, f"f-{i}", NOW + timedelta(seconds=i))
    real = messages._items

    def retried_meanwhile(pks: Any) -> dict[str, dict[str, Any]]:
        items = real(pks)
        items["s#f-1"] = {**items["s#f-1"], "status": {"S": "QUEUED"}}  # a retry by hand
        return items

    monkeypatch.setattr(messages, "_items", retried_meanwhile)
    page = await messages.list("s", Status.FAILED, 10, None)
    assert [m.key.message_id for m in page.items] == ["f-2", "f-0"]


async def test_replay_s_read_stops_at_its_limit_oldest_first(aws: AwsResources) -> None:
    messages, _ = stores(aws)
    for i in range(40):
        await _failed(messages, f"r-{i:02d}", NOW + timedelta(seconds=i))
    found = await messages.failed_between("s", None, NOW, NOW + timedelta(days=1), 10)
    assert [m.key.message_id for m in found] == [f"r-{i:02d}" for i in range(10)]
    window = await messages.failed_between("s", None, NOW + timedelta(seconds=35),
                                           NOW + timedelta(days=1), 10)
    assert [m.key.message_id for m in window] == [f"r-{i}" for i in range(35, 40)]


async def test_items_dynamodb_keeps_leaving_unread_are_an_error_not_a_spin(
    aws: AwsResources, monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(dynamodb_module.time, "sleep", waits.append)
    messages, _ = stores(aws)
    await messages.create(make_message("u-1", "s"))

    inner = client("dynamodb", aws.endpoint)

    class Throttled:
        calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        def batch_get_item(self, RequestItems: Any) -> Any:
            Throttled.calls += 1
            return {"Responses": {}, "UnprocessedKeys": RequestItems}

    messages._db = Throttled()  # type: ignore[assignment]
    with pytest.raises(StoreUnavailable):
        await messages.list("s", None, 10, None)
    assert Throttled.calls == BATCH_GET_TRIES
    # backing off between tries, growing, each at most a second
    assert len(waits) == BATCH_GET_TRIES - 1
    assert waits == sorted(waits)
    assert waits[0] > 0
    assert max(waits) <= 1.0
