"""What Lambda would do around our handlers: API Gateway events, and an SQS event source."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/orders-service"


@dataclass
class FakeContext:
    function_name: str = "notify-relay-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:notify-relay-test"
    aws_request_id: str = "req-1"
    remaining_ms: int = 150_000  # the stack's worker timeout, at the invocation's start

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def api_event(method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
              principal: str | None = ROLE,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it after IAM authorization
    (`principal` None: a method without authorization, as GET /healthz)."""
    raw = orjson.dumps(body).decode() if body is not None else None
    all_headers = {"Content-Type": "application/json", "Host": "api.example",
                   **(headers or {})}
    identity: dict[str, Any] = {"userArn": None, "sourceIp": "127.0.0.1"}
    if principal is not None:
        session = principal.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
        identity = {"userArn": f"{session}/session-1", "sourceIp": "127.0.0.1",
                    "accountId": ACCOUNT}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/prod{path}",
            "stage": "prod", "requestId": str(uuid.uuid4()), "accountId": ACCOUNT,
            "identity": identity,
        },
        "body": raw,
        "isBase64Encoded": False,
    }


# a worker batch of one record that is not a queue entry: it fails before any AWS call, and
# so does the batch (a first invocation for a cold start, measured or checked)
NOT_AN_ENTRY_BATCH: dict[str, Any] = {"Records": [{
    "messageId": "m-1", "receiptHandle": "r", "body": "not a queue entry",
    "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0"},
    "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
    "eventSourceARN": f"arn:aws:sqs:eu-west-1:{ACCOUNT}:work", "awsRegion": "eu-west-1",
}]}


def http_api_event(method: str, path: str, body: Any = None, *,
                   query: dict[str, str] | None = None,
                   principal: str | None = ROLE) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event on the $default stage, after IAM authorization
    (`principal` None: a route without authorization, as GET /healthz)."""
    raw = orjson.dumps(body).decode() if body is not None else None
    context: dict[str, Any] = {
        "accountId": ACCOUNT, "apiId": "api-1", "domainName": "api.example",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "test"},
        "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
        "time": "29/Nov/2026:19:00:00 +0000", "timeEpoch": 1_795_978_800_000}
    if principal is not None:
        session = principal.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
        context["authorizer"] = {"iam": {"accountId": ACCOUNT, "userArn": f"{session}/s-1",
                                         "callerId": "AROAEXAMPLE:s-1"}}
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": {"content-type": "application/json", "host": "api.example"},
        **({"queryStringParameters": query} if query else {}),
        "requestContext": context,
        **({"body": raw} if raw is not None else {}),
        "isBase64Encoded": False,
    }


def query_string(params: dict[str, str]) -> str:
    return urlencode(params)


def sqs_records(messages: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """SQS messages (received with all attributes) as a Lambda event's records from the
    queue `queue_arn`."""
    return [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {
            k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"],
                "stringListValues": [], "binaryListValues": []}
            for k, v in m.get("MessageAttributes", {}).items()},
        "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "eu-west-1",
    } for m in messages]


class SqsEventSource:
    """Polls like Lambda's SQS event source mapping: batches, visibility timeout, partial
    batch failures (only reported records stay), redrive by the queue's maxReceiveCount.

    A batch may be larger than one receive (10), as with a batching window: it is gathered
    from receives until full or the queue has nothing visible."""

    def __init__(self, sqs: Any, queue_url: str, handler: Callable[[dict[str, Any], Any], Any],
                 batch_size: int = 10, visibility_timeout: int = 2,
                 outbox: StreamEventSource | None = None,
                 remaining_ms: int = 150_000) -> None:
        """`outbox`: the table's stream source, run before each poll (as Lambda would run
        it all along), so that what the API stored reaches the queue."""
        self.outbox = outbox
        self.remaining_ms = remaining_ms  # what each invocation's context says is left
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.failures = 0

    def _receive(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < self.batch_size:
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                VisibilityTimeout=self.visibility_timeout, WaitTimeSeconds=0,
                AttributeNames=["All"], MessageAttributeNames=["All"])
            received = response.get("Messages", [])
            if not received:
                break
            messages += received
        return messages

    def poll_once(self) -> int:
        if self.outbox is not None:
            self.outbox.poll_once()
        messages = self._receive()
        if not messages:
            return 0
        records = sqs_records(messages, self.arn)
        try:
            result = self.handler({"Records": records}, FakeContext(remaining_ms=self.remaining_ms))
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except Exception:  # an invocation error: Lambda deletes nothing of the batch
            failed = {r["messageId"] for r in records}
        self.failures += len(failed)
        done = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                for i, r in enumerate(records) if r["messageId"] not in failed]
        for start in range(0, len(done), 10):  # SQS deletes at most 10 per call
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done[start:start + 10])
        return len(messages)

    def run_until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError("the condition did not hold in time")
            if self.poll_once() == 0:
                time.sleep(0.1)


def _lambda_json(value: Any) -> Any:
    """A stream record as Lambda's event carries it: binary values in base64, the time
    in epoch seconds."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, dict):
        return {k: _lambda_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_json(v) for v in value]
    return value


class StreamEventSource:
    """Reads a table's stream like Lambda's DynamoDB event source: each shard from its
    start and in order, batches of up to `batch_size`; when the handler reports a record
    as failed, the records before it are done and the next poll starts again from it."""

    def __init__(self, streams: Any, stream_arn: str,
                 handler: Callable[[dict[str, Any], Any], Any], batch_size: int = 100) -> None:
        self.streams = streams
        self.arn = stream_arn
        self.handler = handler
        self.batch_size = batch_size
        self._iterators: dict[str, str | None] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self.retries = 0

    def _read(self) -> None:
        shards = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self.streams.get_shard_iterator(
                    StreamArn=self.arn, ShardId=shard_id,
                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            iterator = self._iterators[shard_id]
            while iterator is not None:
                response = self.streams.get_records(ShardIterator=iterator)
                iterator = response.get("NextShardIterator")
                self._iterators[shard_id] = iterator
                self._pending.setdefault(shard_id, []).extend(
                    {**_lambda_json(record), "eventSourceARN": self.arn}
                    for record in response.get("Records", []))
                if not response.get("Records"):
                    break

    def poll_once(self) -> int:
        """Hands every record read so far to the handler; returns how many were done."""
        self._read()
        done = 0
        for records in self._pending.values():
            while records:
                batch = records[:self.batch_size]
                result = self.handler({"Records": batch}, FakeContext()) or {}
                failed = [f["itemIdentifier"] for f in result.get("batchItemFailures", [])]
                if not failed:
                    del records[:len(batch)]
                    done += len(batch)
                    continue
                self.retries += 1
                first = next(i for i, r in enumerate(batch)
                             if r["dynamodb"]["SequenceNumber"] == failed[0])
                del records[:first]
                done += first
                break  # this shard waits for the next poll, from the failed record
        return done


def stream_arn(dynamodb: Any, table: str) -> str:
    arn: str = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    return arn
