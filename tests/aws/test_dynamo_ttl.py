"""DynamoDB's TTL deletes only final messages: a waiting one, however long it waits (a
paused destination, a long retry span), carries no `expiresAt` that could delete it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.domain.message import Message
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from tests.aws.moto import AwsResources, client
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio
RETENTION = timedelta(days=7)


def raw(aws: AwsResources, message: Message) -> dict[str, Any]:
    item: dict[str, Any] = client("dynamodb", aws.endpoint).get_item(
        TableName=aws.table, Key={"pk": {"S": f"{message.key.sender_id}#"
                                                f"{message.key.message_id}"}},
        ConsistentRead=True)["Item"]
    return item


def expires_at(aws: AwsResources, message: Message) -> int | None:
    value = raw(aws, message).get("expiresAt")
    return None if value is None else int(value["N"])


async def test_only_final_messages_carry_a_ttl(aws: AwsResources) -> None:
    store = DynamoStore(client("dynamodb", aws.endpoint), aws.table,
                        client("s3", aws.endpoint), aws.bucket, RETENTION)
    stored, _ = await store.create(make_message("m-1", now=NOW, max_attempts=2))
    assert expires_at(aws, stored) is None  # QUEUED
    delivering = await store.update(stored.start_attempt(NOW))
    assert expires_at(aws, delivering) is None
    later = NOW + timedelta(minutes=1)
    retrying = await store.update(delivering.finish_attempt(
        AttemptResult(status_code=503), Decision(Outcome.RETRY, retry_at=later),
        started_at=NOW, duration_ms=1, now=NOW))
    assert expires_at(aws, retrying) is None  # RETRYING
    failed_at = NOW + timedelta(days=40)  # longer than the retention: still kept
    retrying = await store.update(retrying.start_attempt(failed_at))
    failed = await store.update(retrying.finish_attempt(
        AttemptResult(status_code=500), Decision(Outcome.GIVE_UP), started_at=failed_at,
        duration_ms=1, now=failed_at))
    # final: counted from its last change, not from its creation
    assert expires_at(aws, failed) == int((failed_at + RETENTION).timestamp())
    retried = await store.update(failed.retry_by_hand(failed_at + timedelta(hours=1)))
    assert expires_at(aws, retried) is None  # waiting again: the TTL is removed


async def test_a_delivered_message_expires_after_the_retention(aws: AwsResources) -> None:
    store = DynamoStore(client("dynamodb", aws.endpoint), aws.table,
                        client("s3", aws.endpoint), aws.bucket, RETENTION)
    stored, _ = await store.create(make_message("m-2", now=NOW))
    started = await store.update(stored.start_attempt(NOW))
    done_at = NOW + timedelta(seconds=2)
    delivered = await store.update(started.finish_attempt(
        AttemptResult(status_code=200), Decision(Outcome.SUCCESS), started_at=NOW,
        duration_ms=1, now=done_at))
    assert expires_at(aws, delivered) == int((done_at + RETENTION).timestamp())
    cancelled, _ = await store.create(make_message("m-3", now=NOW))
    cancelled = await store.update(cancelled.cancel(NOW))
    assert expires_at(aws, cancelled) == int((NOW + RETENTION).timestamp())
