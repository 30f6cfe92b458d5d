"""The real Lambda handlers driven through measured scenarios, on a metered moto server.

What one notification costs, by who pays: the API side (API Gateway, the API Lambda and its
calls) and the delivery side (the SQS event source's receives and deletes, the worker Lambda
and its calls), each divided by the notifications of the scenario. The handlers run one at
a time, as in tests/aws/test_lambdas_e2e.py, against a real partner on 127.0.0.1; the
runtimes are warmed first (one message delivered), so what a Lambda environment does once
(build its runtime, put a destination on record) is left out. What an environment does per
destination and per second rather than per message (reading the destination's record
through its 1 s cache, writing its statistics at most every 30 s, the API's bare record of
a destination it has not seen) is kept apart, in `Measured.per_environment`, as are empty
receives (an idle poller's cost). A destination record written by an attempt (a failure
counts toward the breaker) is the attempt's.

Used by tests/aws/test_item_size.py and bench/aws_capacity.py.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from notify_relay.config import load
from notify_relay.lambdas import api as api_lambda
from notify_relay.lambdas import outbox as outbox_lambda
from notify_relay.lambdas import reconciler as reconciler_lambda
from notify_relay.lambdas import worker as worker_lambda
from tests.aws.lambda_harness import (
    ROLE,
    FakeContext,
    SqsEventSource,
    StreamEventSource,
    api_event,
    stream_arn,
)
from tests.aws.metering import Call, Meter, Tally, stored_bytes, tally
from tests.aws.moto import AwsResources, client
from tests.partner import Partner

SENDER = "orders"
BATCH = 100  # POST /v1/messages/batch takes at most 100
# the outbox sends to SQS what the API stored: counted with the API's side
API_PHASES = ("api", "outbox")
DELIVERY_PHASES = ("worker", "event source")
FAST_RETRY = {"initialDelaySeconds": 0.01, "maxDelaySeconds": 0.05}


def notification_body(size: int) -> dict[str, Any]:
    """A JSON body of about `size` bytes, shaped like an order event."""
    body: dict[str, Any] = {"type": "order.paid", "orderId": "ord_8f14e45fceea167a",
                            "amount": {"value": 4990, "currency": "EUR"},
                            "customer": {"id": "cus_c4ca4238a0b9", "country": "FR"},
                            "note": ""}
    body["note"] = "x" * max(0, size - len(orjson.dumps(body)))
    return body


@dataclass
class Measured:
    name: str
    notifications: int
    api: Tally  # per notification
    delivery: Tally  # per notification
    per_environment: Tally  # totals over the scenario, not divided
    create_size: int  # bytes of a message's item when created
    final_size: int  # ... after its last write
    largest_size: int  # ... at its largest
    stored_bytes: int  # what its final item takes in storage, index entries included
    seconds: float
    calls: list[Call] = field(repr=False, default_factory=list)

    @property
    def total(self) -> Tally:
        return self.api + self.delivery


class Rig:
    """The API, outbox, worker and reconciler handlers on one set of resources, with the
    phase of each call told to the meter. `setenv` sets the handlers' environment
    (os.environ by default; a test passes monkeypatch.setenv).

    `batch_size`: the records the SQS event source hands the worker at most (10 by
    default; the stack's is 100, which bench/aws_capacity.py passes). A scenario's messages
    share one destination, so above its default maxConcurrency (64) the rig raises that
    default to the batch: a batch would otherwise hold what exceeds the cap, a cost of the
    cap (a limit of its own in the bench), not of a notification."""

    def __init__(self, aws: AwsResources, meter: Meter, partner: Partner,
                 setenv: Callable[[str, str], None] | None = None,
                 batch_size: int = 10) -> None:
        self.aws = aws
        self.meter = meter
        self.partner = partner
        self.batch_size = batch_size
        self._setenv = setenv or os.environ.__setitem__
        self._sqs = client("sqs", aws.endpoint)
        self._dynamodb = client("dynamodb", aws.endpoint)
        self._invocations: dict[str, int] = {}
        self._records = 0
        self._api_bytes = 0
        # one reader of the table's stream for the rig's life: each record once
        self._stream = _MeteredStream(meter, client("dynamodbstreams", aws.endpoint),
                                      stream_arn(self._dynamodb, aws.table), self._outbox)

    # -- life ------------------------------------------------------------------------------

    def __enter__(self) -> Rig:
        settings = self.aws.env(
            NOTIFY_RELAY_IAM_SENDERS=f"{ROLE}={SENDER}",
            NOTIFY_RELAY_ALLOW_NETWORKS="127.0.0.0/8",
            # a retry among successes, as at a partner's occasional 503: failures in a row
            # (the retry scenario's first attempts) must not open the breaker
            NOTIFY_RELAY_BREAKER_FAILURES="1000",
            NOTIFY_RELAY_LOG_LEVEL="WARNING",
            LAMBDA_TASK_ROOT="/var/task",
            AWS_ENDPOINT_URL=self.aws.endpoint, AWS_DEFAULT_REGION="eu-west-1",
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        if self.batch_size > load({}, environ={}).destination_concurrency:
            settings["NOTIFY_RELAY_DESTINATION_CONCURRENCY"] = str(self.batch_size)
        for name, value in settings.items():
            self._setenv(name, value)
        api_lambda._handler = None
        worker_lambda._runtime = None
        worker_lambda._settings = None
        reconciler_lambda._runtime = None  # kept by the module for its environment's life
        reconciler_lambda._settings = None
        outbox_lambda._queue = None
        self._flush = getattr(worker_lambda, "flush_destinations", None)
        if self._flush is not None:  # the statistics written after a batch: per environment
            flush = self._flush

            async def flush_destinations() -> None:
                self.meter.phase = "flush"
                try:
                    await flush()
                finally:
                    self.meter.phase = "worker"

            worker_lambda.flush_destinations = flush_destinations  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._flush is not None:
            worker_lambda.flush_destinations = self._flush  # type: ignore[assignment]
        if worker_lambda._runtime is not None and worker_lambda._loop is not None:
            worker_lambda._loop.run_until_complete(worker_lambda._runtime.stop())
        api_lambda._handler = None
        worker_lambda._runtime = None
        worker_lambda._settings = None
        reconciler_lambda._runtime = None
        reconciler_lambda._settings = None

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        before = self.meter.phase
        self.meter.phase = name
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # EMF metrics lines
                yield
        finally:
            self.meter.phase = before

    def _invoked(self, function: str) -> None:
        self._invocations[function] = self._invocations.get(function, 0) + 1

    # -- the handlers ------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        event = api_event(method, path, body)
        with self._phase("api"):
            self._invoked("api")
            self._api_bytes += len((event["body"] or "").encode())
            response = api_lambda.handler(event, FakeContext())
        raw = response["body"]
        if response.get("isBase64Encoded"):
            raw = base64.b64decode(raw).decode()
        return response["statusCode"], orjson.loads(raw) if raw else None

    def _worker(self, event: dict[str, Any], context: Any) -> Any:
        self.meter.phase = "worker"
        self._invoked("worker")
        self._records += len(event["Records"])
        try:
            return worker_lambda.handler(event, context)
        finally:
            self.meter.phase = "event source"

    def _outbox(self, event: dict[str, Any], context: Any) -> Any:
        self.meter.phase = "outbox"
        self._invoked("outbox")
        try:
            return outbox_lambda.handler(event, context)
        finally:
            self.meter.phase = "stream poller"

    def drain(self, done: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll as Lambda's event sources do (the table's stream for the outbox, then SQS
        in batches of up to `batch_size`) until `done`."""
        source = SqsEventSource(self._sqs, self.aws.queue_url, self._worker,
                                batch_size=self.batch_size, outbox=self._stream)
        with self._phase("event source"):
            source.run_until(done, timeout)

    def reconcile(self) -> dict[str, int]:
        with self._phase("reconciler"):
            self._invoked("reconciler")
            result: dict[str, int] = reconciler_lambda.handler({}, FakeContext())
        return result

    def submit(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            code, answer = self.api("POST", "/v1/messages", message)
            if code != 202:
                raise AssertionError(f"submit: {code} {answer}")

    def submit_batch(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), BATCH):
            code, answer = self.api("POST", "/v1/messages/batch",
                                    {"messages": messages[start:start + BATCH]})
            if code != 200 or any(r["httpStatus"] != 202 for r in answer["items"]):
                raise AssertionError(f"batch: {code} {str(answer)[:300]}")

    def item(self, message_id: str) -> dict[str, Any]:
        """The message's item as stored (read outside any measured phase)."""
        with self._phase("probe"):
            response = self._dynamodb.get_item(
                TableName=self.aws.table, Key={"pk": {"S": f"{SENDER}#{message_id}"}},
                ConsistentRead=True)
        item: dict[str, Any] = response["Item"]
        return item

    # -- measuring ---------------------------------------------------------------------------

    def role(self, call: Call) -> str:
        if call.table == self.aws.table:
            return "messages"
        if call.table == self.aws.destinations_table:
            return "slots" if call.partition.startswith("slot#") else "destination records"
        return call.table

    @staticmethod
    def _per_environment(call: Call, role: str) -> bool:
        """Not the message's: a cached read or a periodic write of a destination's record,
        the API's bare record, the secrets, a receive that found nothing."""
        record = role == "destination records" and (
            call.operation == "GetItem" or call.phase in ("api", "flush"))
        return (record or call.phase == "flush" or call.service == "secretsmanager"
                or call.operation == "ReceiveMessage (empty)"
                # Lambda's reads of the stream for the outbox: not billed per request
                or call.phase == "stream poller")

    def warm(self) -> None:
        """Build the runtimes, put the destination on record: one message delivered."""
        run = uuid.uuid4().hex[:8]
        self.submit([{"messageId": f"warm-{run}", "targetUrl": self.partner.url(f"/ok/{run}")}])
        self.drain(lambda: len(self.partner.received(f"/ok/{run}")) >= 1)

    def measure(self, name: str, messages: list[dict[str, Any]], *, batch: bool,
                requests_expected: int, prefix: str, attempts: int = 1) -> Measured:
        """Submit `messages` (singly or in batches), deliver until the partner has seen
        `requests_expected` requests under `prefix`, and count what it all cost; every
        message must end DELIVERED after `attempts` attempts."""
        self._invocations.clear()
        self._records = self._api_bytes = 0
        mark = self.meter.mark()
        started = time.monotonic()
        (self.submit_batch if batch else self.submit)(messages)
        api_invocations, api_bytes = dict(self._invocations), self._api_bytes
        self.drain(lambda: len(self.partner.received(prefix)) >= requests_expected)
        seconds = time.monotonic() - started
        calls = self.meter.since(mark)
        n = len(messages)
        stored = 0
        for message in messages:
            item = self.item(message["messageId"])
            doc = orjson.loads(item["doc"]["B"])
            if item["status"]["S"] != "DELIVERED" or doc["attemptCount"] != attempts:
                raise AssertionError(f"{message['messageId']}: {item['status']['S']} after "
                                     f"{doc['attemptCount']} attempts")
            stored = max(stored, stored_bytes(item, self.meter.table(self.aws.table)))
        per_message = [c for c in calls if not self._per_environment(c, self.role(c))]
        api = tally([c for c in per_message if c.phase in API_PHASES], self.role)
        api.add("requests apigw", api_invocations.get("api", 0))
        api.add("bytes apigw request", api_bytes)
        api.add("invocations api", api_invocations.get("api", 0))
        api.add("invocations outbox", self._invocations.get("outbox", 0))
        delivery = tally([c for c in per_message if c.phase in DELIVERY_PHASES], self.role)
        delivery.add("invocations worker", self._invocations.get("worker", 0))
        delivery.add("records worker", self._records)
        delivery.add("aws calls by the worker", sum(c.phase == "worker" for c in per_message))
        per_environment = tally([c for c in calls if self._per_environment(c, self.role(c))],
                                self.role)
        sizes: dict[str, list[int]] = {}
        for call in calls:
            if self.role(call) == "messages" and call.item_size is not None and call.ok \
                    and call.operation in ("PutItem", "UpdateItem"):
                sizes.setdefault(call.partition, []).append(call.item_size)
        lives = [sizes[f"{SENDER}#{m['messageId']}"] for m in messages]
        return Measured(
            name, n, api * (1 / n), delivery * (1 / n), per_environment,
            create_size=max(life[0] for life in lives),
            final_size=max(life[-1] for life in lives),
            largest_size=max(max(life) for life in lives), stored_bytes=stored,
            seconds=seconds, calls=calls)


# -- the scenarios ----------------------------------------------------------------------------

def _messages(rig: Rig, run: str, n: int, path: str, body: Any,
              **fields: Any) -> list[dict[str, Any]]:
    return [{"messageId": f"{run}-{i}", "targetUrl": rig.partner.url(f"{path}/{run}/{i}"),
             "body": body, **fields} for i in range(n)]


def single(rig: Rig, n: int, body: Any) -> Measured:
    """(a) one submission a request; the first attempt succeeds."""
    run = uuid.uuid4().hex[:8]
    return rig.measure("single submit, first try", _messages(rig, run, n, "/ok", body),
                       batch=False, requests_expected=n, prefix=f"/ok/{run}/")


def batched(rig: Rig, n: int, body: Any) -> Measured:
    """(b) batches of 100; the first attempt succeeds."""
    run = uuid.uuid4().hex[:8]
    return rig.measure(f"batch of {min(n, BATCH)}, first try",
                       _messages(rig, run, n, "/ok", body),
                       batch=True, requests_expected=n, prefix=f"/ok/{run}/")


def retried(rig: Rig, n: int, body: Any) -> Measured:
    """(c) one submission a request; the first attempt is a 503, the second succeeds.

    Each message has a destination of its own, as a partner's occasional 503 among
    successes would: a failure is written to its destination's record (toward the
    breaker), and ten failures at once at one destination would contend for its record
    (conditional writes, retried), which is the cost of an outage, not of a retry."""
    run = uuid.uuid4().hex[:8]
    messages = [{**m, "destination": f"flaky-{run}-{i}"} for i, m in enumerate(
        _messages(rig, run, n, "/flaky/1", body, retryPolicy=FAST_RETRY))]
    return rig.measure("single submit, 503 then 200", messages, batch=False,
                       requests_expected=2 * n, prefix=f"/flaky/1/{run}/", attempts=2)


def large(rig: Rig, n: int, body_bytes: int) -> Measured:
    """(d) one submission a request with a body above the inline limit (kept in S3)."""
    run = uuid.uuid4().hex[:8]
    text = "b" * body_bytes
    return rig.measure(f"single submit, {body_bytes // 1024} KiB body in S3, first try",
                       _messages(rig, run, n, "/ok", text),
                       batch=False, requests_expected=n, prefix=f"/ok/{run}/")


class _MeteredStream(StreamEventSource):
    """The stream's reader, its own calls told to the meter as Lambda's polling."""

    def __init__(self, meter: Meter, *args: Any) -> None:
        super().__init__(*args)
        self._meter = meter

    def poll_once(self) -> int:
        before = self._meter.phase
        self._meter.phase = "stream poller"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the outbox's EMF lines
                return super().poll_once()
        finally:
            self._meter.phase = before
