"""The real Lambda handlers on moto's server: API Gateway events in, an SQS event source
driving the worker, a real partner on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from notify_relay.lambdas import api as api_lambda
from notify_relay.lambdas import reconciler as reconciler_lambda
from notify_relay.lambdas import worker as worker_lambda
from tests.aws.lambda_harness import ROLE, FakeContext, SqsEventSource, api_event
from tests.aws.moto import AwsResources, client
from tests.partner import Partner

FAST = {"initialDelaySeconds": 0.01, "maxDelaySeconds": 0.05}


@pytest.fixture
def lambdas(aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsResources]:
    for name, value in aws.env(NOTIFY_RELAY_IAM_SENDERS=f"{ROLE}=orders",
                               NOTIFY_RELAY_ALLOW_NETWORKS="127.0.0.0/8").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")  # as in Lambda: one loop, kept
    monkeypatch.setattr(api_lambda, "_handler", None)
    monkeypatch.setattr(worker_lambda, "_runtime", None)
    monkeypatch.setattr(worker_lambda, "_settings", None)
    yield aws
    if worker_lambda._runtime is not None and worker_lambda._loop is not None:
        worker_lambda._loop.run_until_complete(worker_lambda._runtime.stop())


def call_api(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any, dict]:
    response = api_lambda.handler(api_event(method, path, body, **kwargs), FakeContext())
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    return response["statusCode"], orjson.loads(raw) if raw else None, headers


def source(aws: AwsResources) -> SqsEventSource:
    return SqsEventSource(client("sqs", aws.endpoint), aws.queue_url, worker_lambda.handler)


def status_of(message_id: str) -> str:
    code, body, _ = call_api("GET", f"/v1/messages/{message_id}")
    assert code == 200, body
    return str(body["status"])


def message(message_id: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"messageId": message_id, "targetUrl": url, **fields}


def test_happy_path(lambdas: AwsResources, partner: Partner) -> None:
    code, body, headers = call_api("POST", "/v1/messages",
                                   message("h-1", partner.url("/ok"), body={"a": 1}),
                                   headers={"X-Correlation-Id": "corr-h-1"})
    assert code == 202, body
    assert body["senderId"] == "orders"
    assert headers["x-correlation-id"] == "corr-h-1"
    source(lambdas).run_until(lambda: status_of("h-1") == "DELIVERED")
    (got,) = partner.received("/ok")
    assert got.body == b'{"a":1}'
    assert got.header("Idempotency-Key") == "orders:h-1"
    assert got.header("X-Correlation-Id") == "corr-h-1"


def test_retry_then_success(lambdas: AwsResources, partner: Partner) -> None:
    call_api("POST", "/v1/messages", message("r-1", partner.url("/flaky/1"), retryPolicy=FAST))
    source(lambdas).run_until(lambda: status_of("r-1") == "DELIVERED")
    _, body, _ = call_api("GET", "/v1/messages/r-1")
    assert [a["outcome"] for a in body["attempts"]] == ["RETRY", "SUCCESS"]


def test_exhausted_goes_to_dlq_and_failed(lambdas: AwsResources, partner: Partner) -> None:
    call_api("POST", "/v1/messages", message("x-1", partner.url("/status/503"),
                                             retryPolicy={**FAST, "maxAttempts": 2}))
    source(lambdas).run_until(lambda: status_of("x-1") == "FAILED")
    dlq = client("sqs", lambdas.endpoint).receive_message(QueueUrl=lambdas.dead_letter_url)
    assert [orjson.loads(m["Body"])["messageId"] for m in dlq["Messages"]] == ["x-1"]
    code, body, _ = call_api("GET", "/v1/messages", query={"status": "FAILED"})
    assert code == 200
    assert [m["messageId"] for m in body["items"]] == ["x-1"]


def test_duplicate_submission_queues_once(lambdas: AwsResources, partner: Partner) -> None:
    first = call_api("POST", "/v1/messages", message("d-1", partner.url("/ok")))
    again = call_api("POST", "/v1/messages", message("d-1", partner.url("/ok")))
    assert (first[0], again[0]) == (202, 200)
    assert again[1]["duplicate"] is True
    conflict = call_api("POST", "/v1/messages", message("d-1", partner.url("/ok"), body="x"))
    assert (conflict[0], conflict[1]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    attributes = client("sqs", lambdas.endpoint).get_queue_attributes(
        QueueUrl=lambdas.queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "1"
    source(lambdas).run_until(lambda: status_of("d-1") == "DELIVERED")
    assert len(partner.received("/ok")) == 1


def test_large_body_goes_through_s3(lambdas: AwsResources, partner: Partner) -> None:
    text = "0123456789abcdef" * (64 * 1024)  # 1 MiB, above the 256 KiB inline limit
    code, _, _ = call_api("POST", "/v1/messages", message("big-1", partner.url("/ok"), body=text))
    assert code == 202
    objects = client("s3", lambdas.endpoint).list_objects_v2(Bucket=lambdas.bucket)
    assert len(objects["Contents"]) == 1
    assert objects["Contents"][0]["Size"] == len(text)
    source(lambdas).run_until(lambda: status_of("big-1") == "DELIVERED")
    (got,) = partner.received("/ok")
    assert got.body == text.encode()


def test_failed_send_is_reconciled(lambdas: AwsResources, partner: Partner,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an API whose SQS send fails (a queue that does not exist)
    monkeypatch.setenv("NOTIFY_RELAY_QUEUE_URL", lambdas.queue_url + "-missing")
    code, body, _ = call_api("POST", "/v1/messages", message("g-1", partner.url("/ok")))
    assert (code, body["code"]) == (500, "SYSTEM_ERROR")
    # the message is stored but in no queue
    monkeypatch.setenv("NOTIFY_RELAY_QUEUE_URL", lambdas.queue_url)
    monkeypatch.setattr(api_lambda, "_handler", None)
    assert status_of("g-1") == "QUEUED"
    assert source(lambdas).poll_once() == 0
    # When the scheduled reconciler runs, without the sender's help
    monkeypatch.setenv("NOTIFY_RELAY_RECONCILE_GRACE", "0")
    assert reconciler_lambda.handler({}, FakeContext())["queued"] == 1
    assert reconciler_lambda.handler({}, FakeContext())["queued"] == 0
    # Then it is delivered, once
    source(lambdas).run_until(lambda: status_of("g-1") == "DELIVERED")
    assert len(partner.received("/ok")) == 1


def test_poison_record_fails_alone_and_is_redriven(lambdas: AwsResources,
                                                   partner: Partner) -> None:
    sqs = client("sqs", lambdas.endpoint)
    sqs.send_message(QueueUrl=lambdas.queue_url, MessageBody="not a queue entry")
    call_api("POST", "/v1/messages", message("p-1", partner.url("/ok")))
    events = source(lambdas)
    events.run_until(lambda: status_of("p-1") == "DELIVERED")
    assert events.failures >= 1
    # after maxReceiveCount (3) receives the queue moves the poison record to the DLQ
    def in_dlq() -> bool:
        events.poll_once()
        found = sqs.receive_message(QueueUrl=lambdas.dead_letter_url, VisibilityTimeout=0)
        return any(m["Body"] == "not a queue entry" for m in found.get("Messages", []))

    events.run_until(in_dlq, timeout=20)


def test_unmapped_principal_is_forbidden(lambdas: AwsResources) -> None:
    code, body, _ = call_api("GET", "/v1/messages",
                             principal="arn:aws:iam::123456789012:role/stranger")
    assert (code, body["code"]) == (403, "FORBIDDEN")


def test_redriven_poison_is_marked_failed(lambdas: AwsResources, partner: Partner,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a message whose processing always crashes: its body is gone from S3
    text = "x" * (300 * 1024)
    call_api("POST", "/v1/messages", message("poison-1", partner.url("/ok"), body=text))
    s3 = client("s3", lambdas.endpoint)
    (obj,) = s3.list_objects_v2(Bucket=lambdas.bucket)["Contents"]
    s3.delete_object(Bucket=lambdas.bucket, Key=obj["Key"])
    sqs = client("sqs", lambdas.endpoint)
    events = source(lambdas)

    def dead_letters() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=lambdas.dead_letter_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
        return sum(int(v) for v in attributes["Attributes"].values())

    # When the queue's redrive policy moves it to the DLQ after maxReceiveCount receives
    events.run_until(lambda: dead_letters() == 1, timeout=20)
    assert status_of("poison-1") == "QUEUED"
    # Then the reconciler marks it FAILED and leaves the dead letter for the alarm
    monkeypatch.setenv("NOTIFY_RELAY_RECONCILE_GRACE", "60")
    result = reconciler_lambda.handler({}, FakeContext())
    assert result == {"queued": 0, "deadLettersKept": 1, "deadLettersDropped": 0}
    _, body, _ = call_api("GET", "/v1/messages/poison-1")
    assert body["status"] == "FAILED"
    assert body["attempts"][-1]["outcome"] == "GIVE_UP"
    assert "dead-lettered" in body["lastError"]
    assert dead_letters() == 1


def test_manual_retry_clears_the_old_dead_letter(lambdas: AwsResources, partner: Partner,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    call_api("POST", "/v1/messages", message("m-1", partner.url("/flaky/1"),
                                             retryPolicy={**FAST, "maxAttempts": 1}))
    events = source(lambdas)
    events.run_until(lambda: status_of("m-1") == "FAILED")
    code, body, _ = call_api("POST", "/v1/messages/m-1/retry")
    assert (code, body["status"]) == (202, "QUEUED")
    monkeypatch.setenv("NOTIFY_RELAY_RECONCILE_GRACE", "60")
    result = reconciler_lambda.handler({}, FakeContext())
    assert result == {"queued": 0, "deadLettersKept": 0, "deadLettersDropped": 1}
    events.run_until(lambda: status_of("m-1") == "DELIVERED")
    attributes = client("sqs", lambdas.endpoint).get_queue_attributes(
        QueueUrl=lambdas.dead_letter_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    assert sum(int(v) for v in attributes["Attributes"].values()) == 0
