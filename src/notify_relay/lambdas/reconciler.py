"""Scheduled every minute: close the dual-write gap, and keep FAILED and the DLQ in step.

1. Messages stored but never queued (the SQS send failed) are queued.
2. The dead-letter queue is swept (entries are looked at, not consumed): an entry the
   redrive policy moved there marks its message FAILED and counts as `Redriven` (an EMF
   metric, alarmed on); an entry whose message was retried by hand since is removed.

The runtime is built at import in Lambda (see `notify_relay.lambdas`) and kept, with one
event loop made by the first invocation, for the environment's life.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from notify_relay.bootstrap import build_aws
from notify_relay.config import AwsSettings
from notify_relay.lambdas import in_lambda, make_tracer, new_loop
from notify_relay.logs import configure_lambda_logging
from notify_relay.ports import NullObserver
from notify_relay.runtime import Runtime

DEAD_LETTERS_PER_RUN = 500
metrics = Metrics(namespace="NotifyRelay", service="reconciler")
tracer = make_tracer("reconciler")


class RedriveObserver(NullObserver):
    """A message the queue's redrive policy dead-lettered (its processing kept crashing)
    is counted: each one is an alarm (infra: PoisonRedriven), unlike a FAILED outcome."""

    def dead_lettered(self) -> None:
        metrics.add_metric(name="Redriven", unit=MetricUnit.Count, value=1)


async def _run(runtime: Runtime, grace: timedelta) -> dict[str, int]:
    queued = await runtime.relay.reconcile(older_than=grace)
    sweeper = runtime.dead_letters
    dropped = kept = 0
    if sweeper is not None:
        for letter in await sweeper.peek_dead_letters(DEAD_LETTERS_PER_RUN):
            if letter.key is None:
                kept += 1  # not an entry of ours: left for a person to look at
            elif await runtime.relay.reconcile_dead_letter(letter.key, letter.by_worker):
                await sweeper.drop_dead_letter(letter)
                dropped += 1
            else:
                kept += 1
    metrics.add_metric(name="Requeued", unit=MetricUnit.Count, value=queued)
    metrics.add_metric(name="DeadLettersKept", unit=MetricUnit.Count, value=kept)
    return {"queued": queued, "deadLettersKept": kept, "deadLettersDropped": dropped}


def build() -> tuple[Runtime, AwsSettings]:
    configure_lambda_logging()
    settings = AwsSettings.from_env()
    return build_aws(settings, worker=False, observer=RedriveObserver()), settings


_runtime: Runtime | None = None
_settings: AwsSettings | None = None
if in_lambda():
    _runtime, _settings = build()
_loop: asyncio.AbstractEventLoop | None = None


@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Messages younger than the grace may still be in their API Lambda's hands."""
    global _runtime, _settings, _loop
    if _runtime is None or _settings is None:  # not in Lambda (tests): built now
        _runtime, _settings = build()
    if _loop is None:  # one loop for the environment's life, as the other handlers keep
        _loop = new_loop()
    return _loop.run_until_complete(
        _run(_runtime, timedelta(seconds=_settings.reconcile_grace)))
