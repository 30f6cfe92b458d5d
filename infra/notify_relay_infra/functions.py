"""The four Lambdas (API, outbox, worker, reconciler), their grants and event sources (one
SQS event source per work queue shard)."""

from __future__ import annotations

from aws_cdk import Duration, Fn, RemovalPolicy, SecretValue
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from notify_relay_infra.config import WORKER_TIMEOUT, StageConfig
from notify_relay_infra.queues import Queues
from notify_relay_infra.storage import Storage

RUNTIME = lambda_.Runtime.PYTHON_3_13
# Without a reservation the worker shares the account's executions (1,000 by default)
# with the API and the outbox: a delivery backlog must not take them all, or submissions
# are throttled. Half, over all its event sources, until a reservation (on a raised quota)
# says otherwise.
UNRESERVED_WORKER_CAP = 500


def worker_concurrency(stage: StageConfig, reserved: int | None) -> int:
    """Each worker event source's maximum concurrent batches (one source per shard)."""
    if reserved is not None:
        return stage.worker_max_concurrency
    return min(stage.worker_max_concurrency,
               max(2, UNRESERVED_WORKER_CAP // stage.work_queues))  # 2: Lambda's minimum


class Functions(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: StageConfig, storage: Storage,
                 queues: Queues, code: lambda_.Code, iam_senders: str,
                 reserved_concurrency: int | None = None) -> None:
        """`reserved_concurrency`: the worker's reservation (and one for the reconciler),
        only on an account whose quota was raised: Lambda refuses any reservation that
        leaves fewer than 100 unreserved executions, so a new account (a quota of 10, or
        1,000) cannot deploy one. Without it, the event source's cap bounds the worker."""
        super().__init__(scope, id)
        sources_max = stage.work_queues * stage.worker_max_concurrency
        if reserved_concurrency is not None and reserved_concurrency < sources_max:
            # AWS: a function reserved below its SQS event sources' maximum concurrency is
            # throttled by them; receive counts climb and the redrive policy dead-letters
            # messages never attempted
            raise ValueError(f"reservedConcurrency {reserved_concurrency} is below the worker's "
                             f"event source maximum ({stage.work_queues} x "
                             f"{stage.worker_max_concurrency} = {sources_max})")
        environment = {
            "NOTIFY_RELAY_TABLE": storage.table.table_name,
            "NOTIFY_RELAY_DESTINATIONS_TABLE": storage.destinations.table_name,
            "NOTIFY_RELAY_BUCKET": storage.bucket.bucket_name,
            # the shards in order, comma-separated (config.AwsSettings.queue_urls)
            "NOTIFY_RELAY_QUEUE_URL": (queues.work[0].queue_url if len(queues.work) == 1
                                       else Fn.join(",", [q.queue_url for q in queues.work])),
            "NOTIFY_RELAY_DEAD_LETTER_URL": queues.dead_letter.queue_url,
            "NOTIFY_RELAY_VISIBILITY_TIMEOUT": str(int(WORKER_TIMEOUT.to_seconds() * 6)),
            "NOTIFY_RELAY_IAM_SENDERS": iam_senders,
            # each item's TTL: without it the Lambdas kept the default 30 days on every stage
            "NOTIFY_RELAY_RETENTION": str(stage.retention_days),
            "POWERTOOLS_SERVICE_NAME": "notify-relay",
        }

        # the worker signs deliveries with these: in Secrets Manager, not in the environment
        # that anyone allowed to read the functions' configuration sees; a space: no sender
        # signs until an operator puts `senderId=whsec_...` pairs there
        self.signing_secrets = secretsmanager.Secret(
            self, "SigningSecrets", removal_policy=stage.removal_policy,
            description="notify-relay: senderId=whsec_... pairs, comma-separated",
            secret_string_value=SecretValue.unsafe_plain_text(" "))
        NagSuppressions.add_resource_suppressions(self.signing_secrets, [NagPackSuppression(
            id="AwsSolutions-SMG4",
            reason="Webhook signing secrets are shared with partners, who verify with them: a "
                   "rotation is agreed with each partner, never scheduled by AWS alone.")])
        environment["NOTIFY_RELAY_SIGNING_SECRETS_ARN"] = self.signing_secrets.secret_arn

        def function(name: str, handler: str, memory: int, timeout: Duration,
                     **extra: object) -> lambda_.Function:
            log_group = logs.LogGroup(self, f"{name}Logs",
                                      retention=stage.log_retention,
                                      removal_policy=stage.removal_policy)
            return lambda_.Function(
                self, name, runtime=RUNTIME, architecture=lambda_.Architecture.ARM_64,
                handler=handler, code=code, memory_size=memory, timeout=timeout,
                environment=environment, log_group=log_group,
                # Lambda's JSON log format: its own lines (START, REPORT with init and
                # restore durations) are JSON records like the handlers' (which are JSON
                # lines already, at INFO: logs.configure_lambda_logging), and lines below
                # the application level are dropped by Lambda itself
                logging_format=lambda_.LoggingFormat.JSON,
                application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
                system_log_level_v2=lambda_.SystemLogLevel.INFO,
                tracing=lambda_.Tracing.ACTIVE, **extra)  # type: ignore[arg-type]

        self.api = function("Api", "notify_relay.lambdas.api.handler", stage.api_memory_mb,
                            Duration.seconds(29), **({
                                "snap_start": lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS,
                                # a deploy's old version (its code, its snapshot) goes once
                                # the alias has moved: versions would pile up in the
                                # region's 75 GB of code storage
                                "current_version_options": lambda_.VersionOptions(
                                    removal_policy=RemovalPolicy.DESTROY)}
                                if stage.api_snap_start else {}))
        # what API Gateway invokes: with SnapStart, an alias on the version each deploy
        # publishes (a snapshot exists only for a published version, never for $LATEST)
        self.api_entry: lambda_.IFunction = self.api
        if stage.api_snap_start:
            self.api_entry = lambda_.Alias(self, "ApiLive", alias_name="live",
                                           version=self.api.current_version)
        self.worker = function("Worker", "notify_relay.lambdas.worker.handler",
                               stage.worker_memory_mb, WORKER_TIMEOUT,
                               reserved_concurrent_executions=reserved_concurrency)
        self.reconciler = function("Reconciler", "notify_relay.lambdas.reconciler.handler",
                                   256, Duration.seconds(60),
                                   reserved_concurrent_executions=1 if reserved_concurrency
                                   else None)

        for queue in queues.work:  # each up to its own maximum concurrency
            self.worker.add_event_source(sources.SqsEventSource(
                queue, batch_size=100, max_batching_window=Duration.seconds(1),
                report_batch_item_failures=True,
                max_concurrency=worker_concurrency(stage, reserved_concurrency)))
        # the outbox: the table's stream -> SQS. Only the writes that leave a message
        # QUEUED and marked queued reach it (the handler keeps those that were not both
        # before); a record it cannot queue is retried, from that record, for as long as
        # the stream keeps it (24 h; retries and record age unbounded), then reported.
        self.outbox = function("Outbox", "notify_relay.lambdas.outbox.handler", 256,
                               Duration.seconds(60))
        self.outbox.add_event_source(sources.DynamoEventSource(
            storage.table, starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=100, parallelization_factor=10, report_batch_item_failures=True,
            filters=[lambda_.FilterCriteria.filter({
                "eventName": ["INSERT", "MODIFY"],
                "dynamodb": {"NewImage": {"status": {"S": ["QUEUED"]},
                                          "queued": {"BOOL": [True]}}}})],
            on_failure=sources.SqsDlq(queues.outbox_failures)))
        events.Rule(self, "ReconcileEveryMinute",
                    schedule=events.Schedule.rate(Duration.minutes(1)),
                    targets=[targets.LambdaFunction(self.reconciler)])

        # least privilege: each function gets what its code calls, through grant*
        storage.table.grant_read_write_data(self.api)
        storage.table.grant_read_write_data(self.worker)
        storage.table.grant_read_write_data(self.reconciler)
        # destination records and slot leases: the worker applies them, the API shows and
        # changes them (PATCH) and messages put theirs on record; the reconciler's requeue
        # touches no destination
        storage.destinations.grant_read_write_data(self.api)
        storage.destinations.grant_read_write_data(self.worker)
        storage.bucket.grant_put(self.api)
        storage.bucket.grant_read(self.api)
        storage.bucket.grant_read(self.worker)
        storage.bucket.grant_read(self.reconciler)
        # the API stores; the outbox queues (the API reads the queue's attributes for
        # /readyz only)
        for queue in queues.work:
            queue.grant(self.api, "sqs:GetQueueAttributes", "sqs:GetQueueUrl")
            queue.grant_send_messages(self.outbox)
            queue.grant_send_messages(self.worker)
            queue.grant_send_messages(self.reconciler)
        queues.dead_letter.grant_send_messages(self.worker)
        self.signing_secrets.grant_read(self.worker)
        queues.dead_letter.grant_consume_messages(self.reconciler)  # it sweeps, see reconciler.py
