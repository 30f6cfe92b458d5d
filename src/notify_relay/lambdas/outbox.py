"""The outbox Lambda: the messages table's stream in, work queue entries out.

Its event source (infra: filtered to writes that leave a message QUEUED and marked queued,
batches of up to 100, retried from the first record not queued until the stream drops it
after 24 hours) calls it with stream records; adapters/aws/outbox.py decides and sends. It
needs SQS and nothing else: the images carry the whole message.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from notify_relay.adapters.aws.outbox import forward
from notify_relay.config import AwsSettings
from notify_relay.lambdas import AWS_CALLS_IN_FLIGHT, make_tracer, new_loop
from notify_relay.logs import configure_lambda_logging

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from notify_relay.adapters.aws.sqs import SqsQueue

metrics = Metrics(namespace="NotifyRelay", service="outbox")
tracer = make_tracer("outbox")
_queue: SqsQueue | None = None
_loop: asyncio.AbstractEventLoop | None = None


def _build() -> SqsQueue:
    import botocore.session
    from botocore.config import Config

    from notify_relay.adapters.aws.sqs import SqsQueue

    configure_lambda_logging()
    settings = AwsSettings.from_env()
    client = botocore.session.get_session().create_client(
        "sqs", config=Config(retries={"mode": "standard", "total_max_attempts": 4},
                             max_pool_connections=AWS_CALLS_IN_FLIGHT))
    return SqsQueue(cast("SQSClient", client), settings.queue_urls, settings.dead_letter_url)


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _queue, _loop
    if _queue is None:
        _queue = _build()
    if _loop is None:
        _loop = new_loop()
    done = _loop.run_until_complete(forward(event.get("Records", []), _queue))
    metrics.add_metric(name="OutboxQueued", unit=MetricUnit.Count, value=done.queued)
    if done.retry_from is None:
        return {"batchItemFailures": []}
    metrics.add_metric(name="OutboxRetried", unit=MetricUnit.Count, value=1)
    return {"batchItemFailures": [{"itemIdentifier": done.retry_from}]}
