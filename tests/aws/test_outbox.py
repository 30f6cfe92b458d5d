"""The outbox: the messages table's stream queues what was stored, on moto's server with the
real API, outbox and worker handlers, and the rule that picks the records, on its own."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import orjson
import pytest

from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.adapters.aws.outbox import entry_for
from notify_relay.domain.message import Message
from notify_relay.lambdas import outbox as outbox_lambda
from notify_relay.service import Relay
from tests.aws.lambda_harness import SqsEventSource, StreamEventSource, stream_arn
from tests.aws.moto import AwsResources, client
from tests.aws.test_lambdas_e2e import (  # noqa: F401  (lambdas: the fixture)
    FAST,
    call_api,
    lambdas,
    message,
    queue_counts,
    queued_entries,
    status_of,
)
from tests.aws.test_lambdas_e2e import source as worker_source
from tests.factories import NOW, make_message
from tests.partner import Partner

# -- the rule, on stream records built from real items -------------------------------------

_STORE = DynamoStore(None, "t", None, "b")  # type: ignore[arg-type]  # items only


def image(message: Message) -> dict[str, Any]:
    """The item as a stream record in Lambda's event carries it (binary in base64)."""
    item = _STORE._item(message, None)
    return {k: {"B": base64.b64encode(v["B"]).decode()} if "B" in v else v
            for k, v in item.items()}


def record(event: str, new: Message | None, old: Message | None = None) -> dict[str, Any]:
    change: dict[str, Any] = {"SequenceNumber": "1"}
    if new is not None:
        change["NewImage"] = image(new)
    if old is not None:
        change["OldImage"] = image(old)
    return {"eventName": event, "dynamodb": change}


def test_the_records_that_are_queued() -> None:
    created = make_message("m-1", now=NOW).mark_queued()
    entry = entry_for(record("INSERT", created))
    assert entry is not None
    assert (entry.key, entry.due_at, entry.destination) == (
        created.key, NOW, created.destination)
    started = created.start_attempt(NOW)
    assert entry_for(record("MODIFY", started, created)) is None  # an attempt starts
    # a QUEUED message written again (the same state): queued once already
    assert entry_for(record("MODIFY", replace(created, version=2), created)) is None
    notice = make_message("m-1~callback~1", now=NOW)  # stored unqueued until let go
    assert entry_for(record("INSERT", notice)) is None
    assert entry_for(record("MODIFY", notice.mark_queued(), notice)) is not None
    scheduled = replace(created, next_attempt_at=NOW.replace(year=NOW.year + 1))
    due = entry_for(record("INSERT", scheduled))
    assert due is not None
    assert due.due_at == scheduled.next_attempt_at  # deliverAt: the queue delays it
    assert entry_for(record("REMOVE", None, created)) is None  # the TTL
    # an item that cannot be read is queued anyway (the worker quarantines it), not left
    # to fail its whole batch, which would hold the shard for the stream's 24 hours
    broken = record("INSERT", created)
    broken["dynamodb"]["NewImage"]["doc"] = {"B": base64.b64encode(b"{not json").decode()}
    held = entry_for(broken)
    assert held is not None
    assert held.key == created.key


# -- on moto -----------------------------------------------------------------------------


@pytest.fixture
def outbox(lambdas: AwsResources,  # noqa: F811
           monkeypatch: pytest.MonkeyPatch) -> StreamEventSource:
    monkeypatch.setattr(outbox_lambda, "_queue", None)
    return StreamEventSource(client("dynamodbstreams", lambdas.endpoint),
                             stream_arn(client("dynamodb", lambdas.endpoint), lambdas.table),
                             outbox_lambda.handler)


def worker(aws: AwsResources, outbox: StreamEventSource) -> SqsEventSource:
    events = worker_source(aws)
    events.outbox = outbox
    return events


def test_what_is_stored_is_queued_once_by_the_outbox(
    lambdas: AwsResources, outbox: StreamEventSource, partner: Partner,  # noqa: F811
) -> None:
    for message_id in ("o-1", "o-2", "o-1"):  # o-1 twice: one message
        code, _, _ = call_api("POST", "/v1/messages", message(message_id, partner.url("/ok")))
        assert code in (200, 202)
    # the API sends nothing to SQS: its write is the whole submission
    assert queue_counts(lambdas)["ApproximateNumberOfMessages"] == 0
    outbox.poll_once()
    assert sorted(queued_entries(lambdas, 2)) == ["o-1", "o-2"]
    worker(lambdas, outbox).run_until(
        lambda: status_of("o-1") == status_of("o-2") == "DELIVERED")
    assert len(partner.received("/ok")) == 2
    # the worker's writes (attempt started, delivered) queue nothing more
    outbox.poll_once()
    assert sum(queue_counts(lambdas).values()) == 0


def test_a_send_that_fails_is_retried_from_its_record_and_nothing_is_lost(
    lambdas: AwsResources, outbox: StreamEventSource, partner: Partner,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(3):
        call_api("POST", "/v1/messages", message(f"f-{i}", partner.url("/ok")))
    outbox_lambda._queue = outbox_lambda._build()
    real = outbox_lambda._queue.enqueue_many
    failures = iter([True])

    async def flaky(entries: Any) -> None:
        if next(failures, False):
            raise RuntimeError("SQS is down")
        await real(entries)

    monkeypatch.setattr(outbox_lambda._queue, "enqueue_many", flaky)
    # When SQS refuses the outbox's first send
    assert outbox.poll_once() == 0
    assert outbox.retries == 1
    assert queue_counts(lambdas)["ApproximateNumberOfMessages"] == 0
    # Then the next read of the stream sends them all, and each is delivered once
    assert outbox.poll_once() == 3
    worker(lambdas, outbox).run_until(
        lambda: all(status_of(f"f-{i}") == "DELIVERED" for i in range(3)))
    assert len(partner.received("/ok")) == 3


def test_a_retry_by_hand_and_an_outcome_notice_are_queued_by_their_own_writes(
    lambdas: AwsResources, outbox: StreamEventSource, partner: Partner,  # noqa: F811
) -> None:
    # a message that fails once (maxAttempts 1), with a callback for its outcomes
    call_api("POST", "/v1/messages", message(
        "h-1", partner.url("/flaky/1"), retryPolicy={**FAST, "maxAttempts": 1},
        callbackUrl=partner.url("/callbacks/h")))
    events = worker(lambdas, outbox)
    events.run_until(lambda: status_of("h-1") == "FAILED")
    # its FAILED notice was stored before the outcome and let go after it: delivered
    events.run_until(lambda: len(partner.received("/callbacks/h")) == 1)
    code, body, _ = call_api("POST", "/v1/messages/h-1/retry")
    assert (code, body["status"]) == (202, "QUEUED")
    events.run_until(lambda: status_of("h-1") == "DELIVERED")
    events.run_until(lambda: len(partner.received("/callbacks/h")) == 2)
    outcomes = [orjson.loads(r.body)["status"] for r in partner.received("/callbacks/h")]
    assert outcomes == ["FAILED", "DELIVERED"]
    assert len(partner.received("/flaky")) == 2  # one attempt a round, none repeated


def test_a_notice_whose_release_never_ran_is_released_when_its_entry_comes_back(
    lambdas: AwsResources, outbox: StreamEventSource, partner: Partner,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The notice is stored before the outcome and let go after it; a Lambda that dies
    between the two (here: the release raises once) left it stored unqueued for good, with
    no index to find it. The entry's redelivery finds the message final and lets it go."""
    real = Relay._send_notice
    failures = iter([True])

    async def dies_once(self: Relay, notice: Message | None) -> None:
        if notice is not None and next(failures, False):
            raise RuntimeError("the Lambda timed out (simulated)")
        await real(self, notice)

    monkeypatch.setattr(Relay, "_send_notice", dies_once)
    call_api("POST", "/v1/messages", message(
        "n-1", partner.url("/status/503"), retryPolicy={**FAST, "maxAttempts": 1},
        callbackUrl=partner.url("/callbacks/n")))
    events = worker(lambdas, outbox)
    events.run_until(lambda: status_of("n-1") == "FAILED")
    assert events.failures == 1  # the record whose release failed: redelivered
    events.run_until(lambda: len(partner.received("/callbacks/n")) == 1, timeout=30)
    assert [orjson.loads(r.body)["status"] for r in partner.received("/callbacks/n")] == [
        "FAILED"]
    assert len(partner.received("/status")) == 1  # the request itself went once
