"""The worker Lambda: one SQS batch, delivered concurrently, partial failures reported.

Powertools does the batch bookkeeping (a record whose handler raises is reported in
batchItemFailures and only it is redelivered), the JSON logs with the message's ids, and
EMF metrics. A record whose destination cannot take it now is sent back to the queue with a
delay (the Relay's hold), so a batch never waits on a blocked destination; after the batch,
the destinations' statistics are written (the gate's flush). The runtime lives as long as
the execution environment: built at import in Lambda (see `notify_relay.lambdas`), started
by the first invocation (aiohttp's pool, the signing secrets), on one event loop made then
and kept across invocations.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from notify_relay.adapters.aws.sqs import SqsQueue
from notify_relay.bootstrap import build_aws
from notify_relay.config import AwsSettings
from notify_relay.lambdas import annotate, in_lambda, make_tracer, new_loop
from notify_relay.logs import configure_lambda_logging
from notify_relay.runtime import Runtime

FIRST_RETRY_DELAY_SECONDS = 15
MAX_RETRY_DELAY_SECONDS = 900
logger = Logger(service="notify-relay-worker")
metrics = Metrics(namespace="NotifyRelay", service="worker")
tracer = make_tracer("worker")
processor = AsyncBatchProcessor(event_type=EventType.SQS)


class EmfObserver:
    """Observer that records the Relay's events as CloudWatch EMF metrics."""

    def submission(self, result: str, code: str | None = None) -> None:
        return None

    def attempt(self, outcome: str, duration_seconds: float) -> None:
        metrics.add_metric(name=f"Attempts{outcome.title().replace('_', '')}",
                           unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="AttemptDuration", unit=MetricUnit.Milliseconds,
                           value=duration_seconds * 1000)

    def delivered(self, latency_seconds: float) -> None:
        metrics.add_metric(name="Delivered", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="DeliveryLatency", unit=MetricUnit.Seconds, value=latency_seconds)

    def first_attempt(self, delay_seconds: float) -> None:
        # alarmed on at p99 (infra: FirstAttemptDelay): the relay's own delay
        metrics.add_metric(name="FirstAttemptDelay", unit=MetricUnit.Seconds,
                           value=delay_seconds)

    def dead_lettered(self) -> None:
        metrics.add_metric(name="DeadLettered", unit=MetricUnit.Count, value=1)

    def breaker_transition(self, old: str, new: str) -> None:
        metrics.add_metric(name=f"Breaker{new.title().replace('_', '')}", unit=MetricUnit.Count,
                           value=1)

    def held(self, reason: str) -> None:
        metrics.add_metric(name="AttemptsHeld", unit=MetricUnit.Count, value=1)

    def quarantined(self) -> None:
        metrics.add_metric(name="Quarantined", unit=MetricUnit.Count, value=1)


def build() -> tuple[Runtime, AwsSettings]:
    configure_lambda_logging()
    settings = AwsSettings.from_env()
    return build_aws(settings, worker=True, observer=EmfObserver()), settings


_runtime: Runtime | None = None
_settings: AwsSettings | None = None
if in_lambda():
    _runtime, _settings = build()
_started: Runtime | None = None  # the runtime whose start steps have run, on _loop
_loop: asyncio.AbstractEventLoop | None = None


async def _start() -> None:
    """Builds the runtime if it was not at import (tests), and starts it once."""
    global _runtime, _settings, _started
    if _runtime is None or _settings is None:
        _runtime, _settings = build()
    if _started is not _runtime:
        await _runtime.start()
        _started = _runtime


def _current() -> tuple[Runtime, AwsSettings]:
    if _runtime is None or _settings is None:
        raise RuntimeError("the worker's runtime is not built: handler() builds it")
    return _runtime, _settings


async def record_handler(record: SQSRecord, lambda_context: Any = None) -> None:
    """`lambda_context` (Powertools passes it): an attempt that could outlast the
    invocation is not started, and its entry goes back to the queue, due at once."""
    runtime, settings = _current()
    now = datetime.now(UTC)
    lease_until = now + timedelta(seconds=settings.visibility_timeout)
    deadline = (now + timedelta(milliseconds=lambda_context.get_remaining_time_in_millis())
                if lambda_context is not None else None)
    correlation = record.message_attributes["correlationId"]
    claim = SqsQueue.claim_of(record.body, record.receipt_handle, lease_until,
                              correlation.string_value if correlation else None,
                              record.event_source_arn)  # the shard: its receipts
    logger.append_keys(messageId=claim.key.message_id, senderId=claim.key.sender_id,
                       correlationId=claim.correlation_id)
    try:
        await runtime.relay.deliver(claim, deadline=deadline)
    except Exception:  # reported failed: back in seconds, not after the visibility timeout
        receives = int(record.attributes.approximate_receive_count)
        queue = runtime.relay.queue
        if isinstance(queue, SqsQueue):
            try:
                await queue.retry_in(claim, retry_delay(receives,
                                                         int(settings.visibility_timeout)))
            except Exception:
                logger.exception("shortening the visibility failed; the visibility timeout "
                                 "brings the record back")
        raise


def retry_delay(receives: int, visibility_timeout: int = MAX_RETRY_DELAY_SECONDS) -> int:
    """Seconds before a failed record is received again, by its receive count: 15, 60,
    240, then the visibility timeout (900 s as deployed; never later than it would have
    been). A throttle or a stale write costs 15 s, not 15 minutes; a longer fault still has
    about 20 minutes before the queue's maxReceiveCount (5) moves the record to the DLQ,
    where its message is marked FAILED."""
    longest = min(visibility_timeout, MAX_RETRY_DELAY_SECONDS)
    return min(longest, FIRST_RETRY_DELAY_SECONDS << 2 * max(0, receives - 1))


async def flush_destinations() -> None:
    """Write the destinations' statistics this environment holds (at most once per
    destination per flush interval); a failure costs only statistics, never the batch."""
    if _runtime is None:
        return
    try:
        await _runtime.relay.gate.flush()
    except Exception:
        logger.exception("writing destination statistics failed")


@metrics.log_metrics
@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _loop
    records = event.get("Records", [])
    annotate(tracer, "records", len(records))
    tracer.put_metadata("messageIds", [r.get("messageAttributes", {}).get("messageId", {})
                                       .get("stringValue") for r in records])
    if _loop is None:
        _loop = new_loop()
    asyncio.set_event_loop(_loop)  # Powertools runs the batch on the current loop
    try:
        _loop.run_until_complete(_start())
        response: dict[str, Any] = async_process_partial_response(  # type: ignore[assignment]
            event=event, record_handler=record_handler, processor=processor, context=context)
    except BatchProcessingError as exc:  # every record failed: the whole batch comes back
        annotate(tracer, "failures", len(records))
        # Powertools' text holds every record's traceback: in the log, once; the error
        # raised (which Lambda reports and the X-Ray subsegment records) only counts them,
        # since 100 tracebacks made a segment document over the X-Ray daemon's 64 KiB UDP
        # datagram, and the batch's trace was lost
        logger.error("every record of the batch failed", exc_info=exc)
        raise BatchProcessingError(f"all {len(records)} records of the batch failed; their "
                                   "errors are in the log line before") from None
    except Exception:  # the runtime did not start, or the batch broke off: all come back
        annotate(tracer, "failures", len(records))
        raise
    finally:  # the statistics of what was attempted, whatever the batch's end
        _loop.run_until_complete(flush_destinations())
    annotate(tracer, "failures", len(response.get("batchItemFailures", [])))
    return response
