"""What a notification takes in DynamoDB, measured on moto: a change that grows it fails here.

The item's size (DynamoDB's rules: attribute names and values, tests/aws/metering.py) when
created, when delivered and after many attempts, and the write units one notification
costs (single submit, first attempt succeeds: scenario (a) of bench/aws_capacity.py),
for the table and for each index and table it writes. The budgets are what was measured
when they were set, plus 10 %: a change that shrinks what they bound should lower them
(the failure message prints what was measured).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from notify_relay.adapters.aws.dynamodb import ATTEMPTS_KEPT, DynamoStore
from notify_relay.domain.message import BodyKind, Content, Message, MessageKey
from notify_relay.domain.response import BODY_LIMIT, PartnerResponse
from notify_relay.domain.retry import AttemptResult, Decision, Outcome, RetryPolicy
from tests.aws import scenarios
from tests.aws.metering import Meter, item_size
from tests.aws.moto import AwsResources, client, create_resources, start_moto
from tests.partner import Partner

MARGIN = 1.10
BODY_BYTES = 500  # the JSON body of a measured notification (scenarios.notification_body)
# Bytes of one message's item, measured 2026-11-29 at f7457a7 (list indexes KEYS_ONLY);
# created and delivered again with the outbox (no unqueuedShard attribute).
ITEM_BYTES = {
    "created": 1_348,
    "delivered": 1_451,
    # each failed attempt keeping the partner's answer: a 503 with a 1 KiB body (the most
    # kept); answers are kept for the last 10 attempts, attempts for the last ATTEMPTS_KEPT
    "after 1 attempt": 2_638,
    "after 10 attempts": 13_260,
    "after 30 attempts": 15_120,
    f"after {ATTEMPTS_KEPT} attempts": 16_981,
}
# Write units per notification, single submit, first try: table (or index) -> units.
WRITE_UNITS = {
    # 3 writes of a 1.4 KB item: create (already marked queued: the outbox sends it),
    # attempt start and end
    "messages": 6,
    "messages/bySender": 1,  # entered at create; KEYS_ONLY, its key never changes
    "messages/bySenderStatus": 5,  # entered at create, moved at each status change
    "messages/destPending": 2,  # entered at create, left when final
    "slots": 2,  # the destination's in-flight slot, taken and released
}
READ_UNITS = {"messages": 1}


def budget(measured: float) -> int:
    return math.floor(measured * MARGIN)


@pytest.fixture(scope="module")
def metered() -> Iterator[tuple[Meter, str]]:
    meter = Meter()
    server, endpoint = start_moto(wrap=meter.wrap)
    yield meter, endpoint
    server.stop()


@pytest.fixture
def rig(metered: tuple[Meter, str], partner: Partner,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[scenarios.Rig]:
    meter, endpoint = metered
    with scenarios.Rig(create_resources(endpoint), meter, partner,
                       setenv=monkeypatch.setenv) as running:
        running.warm()
        yield running


def test_a_notification_s_item_and_write_units_stay_within_budget(rig: scenarios.Rig) -> None:
    measured = scenarios.single(rig, 10, scenarios.notification_body(BODY_BYTES))
    total = measured.total
    write_units = {name.removeprefix("wru "): units for name, units in total.matching("wru ")
                   .items() if units}
    read_units = {name.removeprefix("rru "): units for name, units in total.matching("rru ")
                  .items() if units}
    seen = (f"measured: created {measured.create_size} B, delivered {measured.final_size} B, "
            f"write units {write_units}, read units {read_units}")
    assert measured.create_size <= budget(ITEM_BYTES["created"]), seen
    assert measured.final_size <= budget(ITEM_BYTES["delivered"]), seen
    assert set(write_units) <= set(WRITE_UNITS), f"writes with no budget: {seen}"
    for name, units in write_units.items():
        assert units <= budget(WRITE_UNITS[name]), f"{name}: {seen}"
    assert set(read_units) <= set(READ_UNITS), f"reads with no budget: {seen}"
    for name, units in read_units.items():
        assert units <= budget(READ_UNITS[name]), f"{name}: {seen}"


def _failed(message: Message, now: datetime) -> tuple[Message, Message]:
    """The message as an attempt starts, and as it ends in a 503."""
    answer = PartnerResponse.capture([("Content-Type", "application/json")],
                                     b"e" * (BODY_LIMIT + 1), more=True)
    started = message.start_attempt(now)
    return started, started.finish_attempt(
        AttemptResult(status_code=503, response=answer),
        Decision(Outcome.RETRY, now + timedelta(seconds=5)),
        started_at=now, duration_ms=215, now=now + timedelta(milliseconds=215))


async def _sizes_by_attempts(aws: AwsResources, counts: list[int]) -> dict[int, int]:
    """Item bytes after each count of failed attempts, written as the worker writes them
    (start, then outcome), through the DynamoDB store."""
    dynamodb = client("dynamodb", aws.endpoint)
    store = DynamoStore(dynamodb, aws.table, client("s3", aws.endpoint), aws.bucket)
    now = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    body = orjson.dumps(scenarios.notification_body(BODY_BYTES))
    content = Content("https://hooks.partner.example/v1/orders", "POST",
                      (("Content-Type", "application/json"),), body, BodyKind.JSON)
    message, _ = await store.create(Message.new(
        MessageKey("orders", "ord_8f14e45fceea167a-paid"), content,
        correlation_id="6f1c2f7e-3a54-4b8e-9a8e-0d4c7e1b2a90",
        policy=RetryPolicy(100, 5.0, 7200.0), timeout_seconds=30.0, now=now))
    message = await store.update(message.mark_queued())
    sizes: dict[int, int] = {}
    for number in range(1, max(counts) + 1):
        now += timedelta(seconds=5)
        started, finished = _failed(message, now)
        message = await store.update(started)
        message = await store.update(finished.with_version(message.version))
        if number in counts:
            item = dynamodb.get_item(TableName=aws.table,
                                     Key={"pk": {"S": "orders#ord_8f14e45fceea167a-paid"}})
            sizes[number] = item_size(item["Item"])
    return sizes


def test_the_attempt_history_is_bounded(aws: AwsResources) -> None:
    counts = [1, 10, 30, ATTEMPTS_KEPT, ATTEMPTS_KEPT + 20]
    sizes = asyncio.run(_sizes_by_attempts(aws, counts))
    seen = f"measured: item bytes by attempts {sizes}"
    for count in counts[:-1]:
        name = f"after {count} attempt{'s' if count > 1 else ''}"
        assert sizes[count] <= budget(ITEM_BYTES[name]), f"{name}: {seen}"
    # beyond ATTEMPTS_KEPT the oldest attempts go: twenty more cost no more than the
    # longer numbers they carry
    assert sizes[ATTEMPTS_KEPT + 20] <= sizes[ATTEMPTS_KEPT] + 20, seen
    assert sizes[ATTEMPTS_KEPT] < 400 * 1024 // 10, seen  # far below DynamoDB's limit
