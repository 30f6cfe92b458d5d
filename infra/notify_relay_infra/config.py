"""Per-stage settings: what differs between a developer's stack and production."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk.aws_logs import RetentionDays

from notify_relay.config import load
from notify_relay.service import DEADLINE_MARGIN_SECONDS

# Lambda's worker timeout: the longest attempt (max-timeout 120 s) plus the store writes.
WORKER_TIMEOUT = Duration.seconds(150)
# An invocation starts an attempt only if it can end, with its writes, before the timeout
# (service.DEADLINE_MARGIN_SECONDS): with a timeout too short for the longest attempt,
# such a message would go back to the queue at every invocation, never attempted.
if load({}, environ={}).max_timeout + DEADLINE_MARGIN_SECONDS >= WORKER_TIMEOUT.to_seconds():
    raise ValueError("WORKER_TIMEOUT must exceed the longest attempt and its margin")


# Lambda's hard maximum for one SQS event source's concurrent batches (MaximumConcurrency)
EVENT_SOURCE_MAX_CONCURRENCY = 1000
# Every function gets the shards' URLs (~110 bytes each) in its environment, which Lambda
# caps at 4 KB in all, beside the IAM senders' ARNs: 8 keeps room for ~20 senders (a
# deploy over the cap fails, and tokens cannot be measured at synth). 8 x 1,000 batches.
MAX_WORK_QUEUES = 8


@dataclass(frozen=True)
class StageConfig:
    name: str
    retention_days: int
    worker_max_concurrency: int  # each SQS event source's cap (2-1,000), not a reservation
    # The work queue's shards, each with its own event source (so the worker can run
    # work_queues x 1,000 batches at once) and a destination's entries all in one. Raise it
    # on a deployed stack, never lower it: CloudFormation deletes a removed queue with the
    # entries in it. Shard 0 keeps the single queue's logical id, so 1 -> N keeps it.
    work_queues: int
    api_memory_mb: int
    worker_memory_mb: int
    api_rate_limit: int
    api_burst_limit: int
    max_receive_count: int
    oldest_message_alarm: Duration
    dead_letter_alarm_percent: float  # of final outcomes, over three 5-minute periods
    removal_policy: RemovalPolicy
    log_retention: RetentionDays
    # SnapStart on the API function: a cold start restores a snapshot taken when the
    # version was published (init paid then), at the cost of a published version per
    # deploy and SnapStart's cache and restore charges (docs/aws.md, Cold start)
    api_snap_start: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.worker_max_concurrency <= EVENT_SOURCE_MAX_CONCURRENCY:
            raise ValueError(f"worker_max_concurrency must be 2-1,000 (an SQS event source's "
                             f"range), not {self.worker_max_concurrency}")
        if not 1 <= self.work_queues <= MAX_WORK_QUEUES:
            raise ValueError(f"work_queues must be 1-{MAX_WORK_QUEUES}, not {self.work_queues}")

    @property
    def body_lifetime(self) -> Duration:
        """How long an S3 body is kept after its upload (or a retry by hand, which renews
        it): the furthest deliverAt, the longest retry span the Lambdas' caps allow, then
        the retention window of the final message, and a day's margin."""
        lambdas = load({}, environ={})  # the Lambdas run on these defaults
        span = lambdas.deliver_at_cap + lambdas.retry_limits.longest_span()
        return Duration.days(math.ceil(span / 86400) + self.retention_days + 1)


STAGES = {
    "dev": StageConfig(
        # a new account's concurrency quota is 10: leave room for the API and reconciler
        name="dev", retention_days=7,
        worker_max_concurrency=5, work_queues=1, api_memory_mb=512, worker_memory_mb=512,
        api_rate_limit=100, api_burst_limit=200, max_receive_count=5,
        oldest_message_alarm=Duration.minutes(20), dead_letter_alarm_percent=20.0,
        removal_policy=RemovalPolicy.DESTROY,
        log_retention=RetentionDays.ONE_WEEK),
    "prod": StageConfig(
        name="prod", retention_days=30,
        # 4 shards: 4,000 batches at once, where 1,000 held 41,667 notifications/s with
        # partners at 2 s (bench/aws_capacity.py; docs/aws.md, Capacity)
        worker_max_concurrency=1000, work_queues=4, api_memory_mb=1024,
        worker_memory_mb=1024,
        api_rate_limit=100_000, api_burst_limit=50_000, max_receive_count=5,
        oldest_message_alarm=Duration.minutes(20), dead_letter_alarm_percent=5.0,
        removal_policy=RemovalPolicy.RETAIN,
        log_retention=RetentionDays.THREE_MONTHS,
        api_snap_start=True),
}
