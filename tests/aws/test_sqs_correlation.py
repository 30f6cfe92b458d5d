"""The SQS queue keeps an entry's correlation id (and destination) when it reschedules or
dead-letters it: a retry's or a dead letter's trace leads back to the request that queued it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notify_relay.adapters.aws.sqs import SqsQueue, decode_entry
from notify_relay.domain.message import MessageKey
from tests.aws.moto import AwsResources, client

pytestmark = pytest.mark.anyio
KEY = MessageKey("s", "m-1")


def queue(aws: AwsResources) -> SqsQueue:
    return SqsQueue(client("sqs", aws.endpoint), aws.queue_url, aws.dead_letter_url)


async def test_a_rescheduled_entry_keeps_its_correlation_id(aws: AwsResources) -> None:
    sqs = queue(aws)
    await sqs.enqueue(KEY, datetime.now(UTC), "corr-1", "partner:443")
    (claim,) = await sqs.claim(10, 30.0)
    assert (claim.correlation_id, claim.destination) == ("corr-1", "partner:443")
    await sqs.reschedule(claim, datetime.now(UTC))
    (again,) = await sqs.claim(10, 30.0)
    assert (again.key, again.correlation_id, again.destination) == (KEY, "corr-1", "partner:443")


async def test_a_dead_letter_keeps_its_correlation_id_and_destination(aws: AwsResources) -> None:
    sqs = queue(aws)
    await sqs.enqueue(KEY, datetime.now(UTC), "corr-2", "partner:443")
    (claim,) = await sqs.claim(10, 30.0)
    await sqs.dead_letter(claim)
    response = client("sqs", aws.endpoint).receive_message(
        QueueUrl=aws.dead_letter_url, MessageAttributeNames=["All"], MaxNumberOfMessages=10)
    (letter,) = response["Messages"]
    assert letter["MessageAttributes"]["correlationId"]["StringValue"] == "corr-2"
    key, _, destination = decode_entry(letter["Body"])
    assert (key, destination) == (KEY, "partner:443")


async def test_an_entry_queued_without_one_has_none(aws: AwsResources) -> None:
    sqs = queue(aws)
    await sqs.enqueue(KEY, datetime.now(UTC))
    (claim,) = await sqs.claim(10, 30.0)
    assert claim.correlation_id is None
