"""The work queue's shards, their dead-letter queue, and where the outbox reports what it
could not queue (SQS standard)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from notify_relay_infra.config import WORKER_TIMEOUT, StageConfig


class Queues(Construct):
    def __init__(self, scope: Construct, id: str, stage: StageConfig) -> None:
        super().__init__(scope, id)
        self.dead_letter = sqs.Queue(
            self, "DeadLetter",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        # the shards, in order (the Lambdas hash a destination to its index): each redrives
        # to the one dead-letter queue, which the reconciler sweeps for all of them. Shard
        # 0 is "Work", the single queue's id before shards, so a stack keeps that queue
        self.work = [sqs.Queue(
            self, "Work" if index == 0 else f"Work{index}",
            # six times the worker's timeout, as AWS advises for Lambda event sources
            visibility_timeout=Duration.seconds(WORKER_TIMEOUT.to_seconds() * 6),
            retention_period=Duration.days(14),
            max_message_size_bytes=256 * 1024,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter,
                                                  max_receive_count=stage.max_receive_count),
        ) for index in range(stage.work_queues)]
        # records of the table's stream the outbox could not queue before the stream
        # dropped them (24 hours of retries): only their positions, for a person (alarmed)
        self.outbox_failures = sqs.Queue(
            self, "OutboxFailures",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
