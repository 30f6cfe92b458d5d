"""The API Lambda: the same FastAPI app as the embedded server, behind API Gateway (IAM auth).

The app, its runtime and the Mangum adapter are built at import in Lambda (see
`notify_relay.lambdas`): the init phase pays for them, not the first request. Building them
opens no connection (a botocore client connects on its first call) and makes no event
loop: the first invocation makes the one every invocation then runs on.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from mangum import Mangum

from notify_relay.api.app import create_app
from notify_relay.bootstrap import build_aws
from notify_relay.config import AwsSettings
from notify_relay.lambdas import annotate, in_lambda, make_tracer, new_loop
from notify_relay.logs import configure_lambda_logging
from notify_relay.ports import NullObserver

metrics = Metrics(namespace="NotifyRelay", service="api")
tracer = make_tracer("api")


class _Adapter(Mangum):
    """Mangum, less the event loop it makes as it is built when none is current: a loop
    (its file descriptors) made at import would outlive a SnapStart snapshot. It runs on
    the current loop, which `handler` sets."""

    def _setup_event_loop(self) -> None:
        return None


class SubmissionMetrics(NullObserver):
    """Submissions by result, as CloudWatch EMF metrics (dimension service=api): what the
    embedded server's /metrics counts. Flushed once per invocation by `handler`."""

    def submission(self, result: str, code: str | None = None) -> None:
        metrics.add_metric(name=f"Submissions{result.title()}", unit=MetricUnit.Count,
                           value=1)


def build() -> Mangum:
    configure_lambda_logging()
    runtime = build_aws(AwsSettings.from_env(), worker=False, observer=SubmissionMetrics())
    # lifespan off: the API runtime has nothing to start, and Mangum would otherwise run
    # startup and shutdown around every invocation
    return _Adapter(create_app(runtime), lifespan="off")


_handler: Mangum | None = build() if in_lambda() else None
_loop: asyncio.AbstractEventLoop | None = None


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler, _loop
    if _loop is None:  # this environment's first invocation: after a SnapStart restore too
        # every environment restored from one snapshot would draw the same numbers (the
        # Relay's jitter): reseeded from os.urandom, which the kernel makes unique
        random.seed()
        _loop = new_loop()
    asyncio.set_event_loop(_loop)  # Mangum runs on the current loop: keep one for our life
    if _handler is None:  # not in Lambda (tests): built from the environment of this call
        _handler = build()
    response: dict[str, Any] = _handler(event, context)
    annotate(tracer, "status", int(response.get("statusCode", 0)))
    return response
