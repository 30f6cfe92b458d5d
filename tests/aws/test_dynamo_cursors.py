"""The DynamoDB adapters' list cursors are LastEvaluatedKeys: a forged one is InvalidCursor
(a 400), never a DynamoDB ValidationException (a 500), and never another sender's page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notify_relay.adapters.aws.destinations import DynamoDestinationStore
from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.adapters.paging import encode_cursor
from notify_relay.domain.destination import Destination, DestinationKey
from notify_relay.domain.errors import InvalidCursor
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
