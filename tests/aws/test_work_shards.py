"""The work queue in shards by destination, on moto's server with the real API, outbox and
worker handlers.

Lambda's SQS event source needs Docker in moto, so the worker handler is driven by hand
with records of two shards in one event, as two event sources would hand them over.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.adapters.aws.sqs import SqsQueue, shard_of
from notify_relay.config import AwsSettings, ConfigError
from notify_relay.domain.message import MessageKey
from notify_relay.lambdas import reconciler as reconciler_lambda
from notify_relay.lambdas import worker as worker_lambda
from notify_relay.ports import Entry
from tests.aws.lambda_harness import FakeContext, SqsEventSource, sqs_records
from tests.aws.moto import AwsResources, client, create_resources
from tests.aws.test_lambdas_e2e import (  # noqa: F401  (lambdas: the fixture)
    call_api,
    lambdas,
    outbox_of,
    status_of,
    view_of,
)
from tests.partner import Partner

SHARDS = 4
SENDER = "orders"  # the test principal's senderId (test_lambdas_e2e.lambdas)


@pytest.fixture
def aws(moto_endpoint: str, aws: AwsResources) -> AwsResources:
    """As conftest's (which points boto3 at moto), with the work queue in SHARDS shards."""
    return create_resources(moto_endpoint, work_queues=SHARDS)


def shard(message_id: str, name: str) -> int:
    return shard_of(MessageKey(SENDER, message_id), name, SHARDS)


def arn_of(sqs: Any, url: str) -> str:
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    return arn


def receive_all(sqs: Any, url: str, hide_seconds: int = 60) -> list[dict[str, Any]]:
    """Every visible entry of one queue, hidden for `hide_seconds`."""
    found: list[dict[str, Any]] = []
    while received := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=hide_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", []):
        found += received
    return found


def release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    """Received entries visible again at once, as they were."""
    for m in messages:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                                      VisibilityTimeout=0)


def visible(sqs: Any, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])


def depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.1)


def test_the_shard_is_a_stable_hash_of_the_destination() -> None:
    # one destination: one shard, whatever the message; the same in every process
    assert {shard(f"m-{i}", "crm") for i in range(50)} == {shard("m-0", "crm")}
    assert shard_of(MessageKey("orders", "m-1"), "crm", 4) == 2  # sha256: fixed for good
    # another sender's destination of the same name is another destination
    spread = {shard_of(MessageKey(f"s{i}", "m"), "crm", SHARDS) for i in range(40)}
    assert spread == set(range(SHARDS))
    # without a destination, by the message; one queue: always shard 0
    assert len({shard_of(MessageKey("s", f"m-{i}"), None, SHARDS) for i in range(40)}) > 1
    assert {shard_of(MessageKey("s", f"m-{i}"), f"d{i}", 1) for i in range(20)} == {0}


def test_the_outbox_queues_each_destination_on_its_shard_and_each_shard_delivers(
    lambdas: AwsResources, partner: Partner  # noqa: F811
) -> None:
    # Given 3 messages to each of 12 destinations, stored by one batch submission
    names = [f"dest-{i}" for i in range(12)]
    messages = [{"messageId": f"{name}-{j}", "targetUrl": partner.url(f"/ok/{name}"),
                 "destination": name} for name in names for j in range(3)]
    code, body, _ = call_api("POST", "/v1/messages/batch", {"messages": messages})
    assert code in (200, 202), body
    # When the outbox reads the stream
    outbox_of(lambdas).poll_once()
    # Then each destination's entries are all on the shard its hash picks
    sqs = client("sqs", lambdas.endpoint)
    where: dict[str, set[int]] = {}
    for index, url in enumerate(lambdas.queue_urls):
        entries = receive_all(sqs, url)
        for entry in entries:
            where.setdefault(orjson.loads(entry["Body"])["destination"], set()).add(index)
        release(sqs, url, entries)
    assert where == {name: {shard(f"{name}-0", name)} for name in names}
    assert len({index for found in where.values() for index in found}) == SHARDS  # spread
    # and the worker, fed by one event source per shard, delivers them all
    sources = [SqsEventSource(sqs, url, worker_lambda.handler) for url in lambdas.queue_urls]
    wait_for(lambda: sum(source.poll_once() for source in sources) == 0
             and all(status_of(m["messageId"]) == "DELIVERED" for m in messages), timeout=30)
    assert len(partner.received("/ok/")) == 36  # each once
    assert sum(depth(sqs, url) for url in lambdas.queue_urls) == 0


def _two_destinations_on_two_shards() -> tuple[str, str]:
    held = "held-one"
    free = next(f"free-{i}" for i in range(100)
                if shard("x", f"free-{i}") != shard("x", held))
    return held, free


def test_one_invocation_with_records_of_two_shards(
    lambdas: AwsResources, partner: Partner, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """A held record goes back to its own shard; a failed one's visibility is cut in its own
    queue (a receipt is valid there only); the free ones are delivered."""
    held, free = _two_destinations_on_two_shards()
    held_url, free_url = (lambdas.queue_urls[shard("x", held)],
                          lambdas.queue_urls[shard("x", free)])
    code, _, _ = call_api("PATCH", f"/v1/destinations/{held}", {"paused": True})
    assert code == 200
    messages = ([{"messageId": f"h-{i}", "targetUrl": partner.url("/ok/held"),
                  "destination": held} for i in range(5)]
                + [{"messageId": f"f-{i}", "targetUrl": partner.url("/ok/free"),
                    "destination": free} for i in range(5)])
    code, body, _ = call_api("POST", "/v1/messages/batch", {"messages": messages})
    assert code in (200, 202), body
    outbox_of(lambdas).poll_once()
    sqs = client("sqs", lambdas.endpoint)
    from_held, from_free = receive_all(sqs, held_url), receive_all(sqs, free_url)
    assert (len(from_held), len(from_free)) == (5, 5)
    # f-4's first write fails (a throttle beyond botocore's retries): its record fails
    real_update = DynamoStore.update
    failures = [1]

    async def throttled_once(self: DynamoStore, message: Any) -> Any:
        if message.key.message_id == "f-4" and failures[0]:
            failures[0] -= 1
            raise RuntimeError("ProvisionedThroughputExceededException (simulated)")
        return await real_update(self, message)

    monkeypatch.setattr(DynamoStore, "update", throttled_once)
    # When one invocation gets the records of both shards
    event = {"Records": sqs_records(from_held, arn_of(sqs, held_url))
             + sqs_records(from_free, arn_of(sqs, free_url))}
    result = worker_lambda.handler(event, FakeContext())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    (f4,) = [m["MessageId"] for m in from_free if orjson.loads(m["Body"])["messageId"] == "f-4"]
    assert failed == {f4}
    # (Lambda deletes the records the batch did not report)
    for url, received in ((held_url, from_held), (free_url, from_free)):
        for m in received:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # Then the free destination's are delivered, but the failed one
    assert [status_of(f"f-{i}") for i in range(5)] == ["DELIVERED"] * 4 + ["QUEUED"]
    assert len(partner.received("/ok/free")) == 4
    # the failed record is visible again in its shard within seconds (the harness's
    # visibility setting, 2 s), where it was hidden for 60: its own queue took the receipt
    wait_for(lambda: visible(sqs, free_url) == 1, timeout=8)
    # the paused destination's entries went back to their own shard, unattempted
    assert partner.received("/ok/held") == []
    assert {(view_of(f"h-{i}")["status"], view_of(f"h-{i}")["attemptCount"])
            for i in range(5)} == {("QUEUED", 0)}
    assert depth(sqs, held_url) == 5
    assert sum(depth(sqs, url) for url in lambdas.queue_urls
               if url not in (held_url, free_url)) == 0
    wait_for(lambda: visible(sqs, held_url) == 5)  # the hold's delay: 1-2 s here
    assert {orjson.loads(m["Body"])["messageId"]
            for m in receive_all(sqs, held_url)} == {f"h-{i}" for i in range(5)}


def test_a_shard_s_poison_is_redriven_to_the_one_dead_letter_queue_and_marked_failed(
    lambdas: AwsResources, partner: Partner  # noqa: F811
) -> None:
    """Each shard's redrive policy moves to the same dead-letter queue, which the reconciler
    sweeps: a shard's poison gets its FAILED like the single queue's did."""
    name = next(f"poisoned-{i}" for i in range(100) if shard("x", f"poisoned-{i}") != 0)
    url = lambdas.queue_urls[shard("x", name)]
    # Given a message whose processing always crashes: its body is gone from S3
    code, _, _ = call_api("POST", "/v1/messages", {
        "messageId": "poison-1", "targetUrl": partner.url("/ok"), "destination": name,
        "body": "x" * (300 * 1024)})
    assert code == 202
    s3 = client("s3", lambdas.endpoint)
    (obj,) = s3.list_objects_v2(Bucket=lambdas.bucket)["Contents"]
    s3.delete_object(Bucket=lambdas.bucket, Key=obj["Key"])
    outbox_of(lambdas).poll_once()
    sqs = client("sqs", lambdas.endpoint)
    assert depth(sqs, url) == 1
    # When its shard's event source receives it maxReceiveCount times
    SqsEventSource(sqs, url, worker_lambda.handler).run_until(
        lambda: depth(sqs, lambdas.dead_letter_url) == 1, timeout=20)
    assert depth(sqs, url) == 0
    # Then the reconciler, sweeping the one dead-letter queue, marks it FAILED
    result = reconciler_lambda.handler({}, FakeContext())
    assert result == {"queued": 0, "deadLettersKept": 1, "deadLettersDropped": 0}
    _, body, _ = call_api("GET", "/v1/messages/poison-1")
    assert (body["status"], body["attempts"][-1]["outcome"]) == ("FAILED", "GIVE_UP")


def test_a_polling_worker_claims_from_every_shard_and_completes_where_it_claimed(
    aws: AwsResources,
) -> None:
    sqs = client("sqs", aws.endpoint)
    queue = SqsQueue(sqs, aws.queue_urls, aws.dead_letter_url)
    names = [f"d-{i}" for i in range(8)]
    now = datetime.now(UTC)

    async def run() -> list[str]:
        await queue.enqueue_many([Entry(MessageKey("s", f"m-{i}"), now, None, name)
                                  for i, name in enumerate(names)])
        assert await queue.depth() == 8
        claimed: list[str] = []
        for _ in range(4 * SHARDS):  # the shards in turn, until all are claimed
            claims = await queue.claim(10, 30)
            for claim in claims:
                claimed.append(claim.key.message_id)
                assert claim.source == aws.queue_urls[
                    shard_of(claim.key, claim.destination, SHARDS)].rsplit("/", 1)[1]
                if claim.key.message_id == "m-0":
                    await queue.reschedule(claim, now)  # back to its own shard
                else:
                    await queue.complete(claim)
        return claimed

    claimed = asyncio.run(run())
    assert sorted(set(claimed)) == sorted(f"m-{i}" for i in range(8))
    home = aws.queue_urls[shard_of(MessageKey("s", "m-0"), "d-0", SHARDS)]
    assert [depth(sqs, url) for url in aws.queue_urls] == [
        1 if url == home else 0 for url in aws.queue_urls]


def test_the_lambdas_take_the_shards_comma_separated() -> None:
    env = {"NOTIFY_RELAY_TABLE": "t", "NOTIFY_RELAY_DESTINATIONS_TABLE": "dt",
           "NOTIFY_RELAY_DEAD_LETTER_URL": "d", "NOTIFY_RELAY_BUCKET": "b"}
    one = AwsSettings.from_env({**env, "NOTIFY_RELAY_QUEUE_URL": "https://q/1/work"})
    assert one.queue_urls == ("https://q/1/work",)
    four = AwsSettings.from_env({**env, "NOTIFY_RELAY_QUEUE_URL": "u0, u1,u2 ,u3"})
    assert four.queue_urls == ("u0", "u1", "u2", "u3")
    with pytest.raises(ConfigError, match="NOTIFY_RELAY_QUEUE_URL"):
        AwsSettings.from_env({**env, "NOTIFY_RELAY_QUEUE_URL": "u0,,u2"})
