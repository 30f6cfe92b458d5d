"""The composition root: the only place that picks adapters.

Adapters are imported inside the builder that uses them: a Lambda's cold start pays
only for its own (the API Lambda never loads aiohttp, SQLite or the worker).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from notify_relay.adapters.signing import StandardWebhooksSigner
from notify_relay.auth import Authenticator
from notify_relay.config import AwsSettings, Settings
from notify_relay.domain.network import NetworkPolicy
from notify_relay.domain.ratelimit import RateLimiter
from notify_relay.domain.retry import AttemptResult
from notify_relay.gate import Gate
from notify_relay.ports import NullObserver, Observer, OutboundRequest
from notify_relay.retention import RetentionSweeper
from notify_relay.runtime import Runtime, Step
from notify_relay.service import Relay

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

    from notify_relay.adapters.prometheus import PrometheusObserver
    from notify_relay.console.reads import ConsoleReads
    from notify_relay.worker.wakeup import WakeUp


class NoDelivery:
    """The Deliverer of a runtime that only accepts and reads (the API Lambda)."""

    async def send(self, request: OutboundRequest) -> AttemptResult:
        raise RuntimeError("this runtime does not deliver")


def build_embedded(settings: Settings, *, shared: bool = False,
                   wakeup: WakeUp | None = None) -> Runtime:
    """SQLite store and queue, HTTP delivery (adapters/http.py), the worker in-process.

    Opens (and locks) the database file now, so that a second process fails before it
    binds a port; raises DatabaseLocked. `shared`: the API runs in a process of its own too
    (build_embedded_api), which writes to the file and rings `wakeup` when it queues work;
    this process then serves only what needs the delivery's state (embedded/).
    """
    from notify_relay.adapters.http import HttpDeliverer
    from notify_relay.adapters.prometheus import PrometheusObserver
    from notify_relay.adapters.sqlite import (
        SqliteDatabase,
        SqliteDestinationStore,
        SqliteQueue,
        SqliteStore,
    )
    from notify_relay.adapters.sqlite.console import SqliteConsoleReads
    from notify_relay.worker.loop import Worker, WorkerSettings, most_in_flight
    from notify_relay.worker.wakeup import WakeUp

    database = SqliteDatabase(settings.db, shared=shared)
    database.open()
    queue = SqliteQueue(database)
    network = NetworkPolicy(settings.allow_networks)
    deliverer = HttpDeliverer(network, max_connections=most_in_flight(settings.concurrency))
    metrics = PrometheusObserver(submissions=not shared)
    limits = settings.retry_limits
    wakeup = wakeup or WakeUp()
    gate = Gate(SqliteDestinationStore(database), settings.destination_rules, observer=metrics,
                probe_seconds=limits.max_timeout + 60.0, on_ready=wakeup.ready)
    metrics.watch_destinations(gate)
    relay = Relay(
        store=SqliteStore(database),
        queue=queue,
        deliverer=deliverer,
        gate=gate,
        limits=limits,
        network=network,
        signer=StandardWebhooksSigner(settings.signing_secrets),
        observer=metrics,
        on_scheduled=wakeup.scheduled,
        schedule_cap=timedelta(seconds=settings.deliver_at_cap),
    )
    worker = Worker(relay, queue, WorkerSettings(
        concurrency=settings.concurrency,
        lease_seconds=limits.max_timeout + 60.0,
        shutdown_grace_seconds=settings.shutdown_grace,
    ), wakeup)

    async def close_database() -> None:
        database.close()

    console = SqliteConsoleReads(database)
    starts: list[Step] = [deliverer.open, worker.start]
    stops: list[Step] = [close_database, console.close, deliverer.close, worker.stop]
    if settings.retention > 0:
        sweeper = RetentionSweeper(relay.store, timedelta(days=settings.retention),
                                   release_space=database.release_free_pages)
        starts.append(sweeper.start)
        stops.append(sweeper.stop)
    runtime = _embedded_runtime(settings, relay, metrics, console, starts=starts, stops=stops,
                                checks=[worker.check_alive])
    runtime.hurries.append(worker.hurry)
    return runtime


def build_embedded_api(settings: Settings, *, wake: Callable[[], None],
                       owner_ready: Step) -> Runtime:
    """The API process of a two-process `serve`: accepts, reads, retries and cancels on the
    file that the delivery process opened (and holds), and `wake`s it when it queues work.

    Its gate only answers when a message is expected to go: it reads destinations from the
    file, through a cache of a second, never admits an attempt. What needs the delivery's
    own state (destinations, metrics) the API process forwards (embedded/owner.py).
    """
    from notify_relay.adapters.prometheus import PrometheusObserver
    from notify_relay.adapters.sqlite import (
        SqliteDatabase,
        SqliteDestinationStore,
        SqliteQueue,
        SqliteStore,
    )
    from notify_relay.adapters.sqlite.console import SqliteConsoleReads

    database = SqliteDatabase(settings.db, shared=True)
    database.attach()
    metrics = PrometheusObserver()
    limits = settings.retry_limits
    network = NetworkPolicy(settings.allow_networks)
    relay = Relay(
        store=SqliteStore(database),
        queue=SqliteQueue(database),
        deliverer=NoDelivery(),
        gate=Gate(SqliteDestinationStore(database), settings.destination_rules, shared=True,
                  cache_seconds=1.0, observer=metrics, probe_seconds=limits.max_timeout + 60.0),
        limits=limits,
        network=network,
        signer=StandardWebhooksSigner(settings.signing_secrets),
        observer=metrics,
        on_scheduled=lambda due_at: wake(),
        schedule_cap=timedelta(seconds=settings.deliver_at_cap),
    )

    async def close_database() -> None:
        database.close()

    console = SqliteConsoleReads(database)
    return _embedded_runtime(settings, relay, metrics, console,
                             stops=[close_database, console.close], checks=[owner_ready])


def _embedded_runtime(settings: Settings, relay: Relay, metrics: PrometheusObserver,
                      console: ConsoleReads, *, stops: list[Step], checks: list[Step],
                      starts: list[Step] | None = None) -> Runtime:
    """What the embedded server's processes share: keys, rate limit, metrics, console."""
    return Runtime(
        relay=relay,
        auth=Authenticator.from_keys(settings.api_keys),
        metrics=metrics,
        limiter=(RateLimiter(settings.rate_limit, settings.rate_burst)
                 if settings.rate_limit > 0 else None),
        metrics_need_key=settings.metrics_need_key,
        console=console,
        starts=starts or [],
        stops=stops,
        checks=checks,
    )


def build_aws(settings: AwsSettings, *, worker: bool, observer: Observer | None = None) -> Runtime:
    """DynamoDB + S3 store, SQS queue, HTTP delivery (opened only for the worker).

    Opens no connection and makes nothing bound to an event loop, since a Lambda builds it
    at import (where SnapStart may snapshot it): start steps, run by the first invocation,
    do that: aiohttp's session, and reading the signing secrets from Secrets Manager (the
    worker's only).

    The gate is shared (every Lambda reads and writes the same destination records) and
    counts attempts in flight with slot leases in DynamoDB; the API gets the limiter too,
    only to show `inFlight`. The clients are botocore's, without boto3, whose session
    imports s3transfer as it makes an S3 client (about 50 ms of every cold start here) for
    upload and download helpers nothing calls; imported here, not at module level: the
    embedded server never pays for them.
    """
    import botocore.session
    from botocore.config import Config

    from notify_relay.adapters.aws.destinations import DynamoDestinationStore, DynamoSlotLimiter
    from notify_relay.adapters.aws.dynamodb import DynamoStore
    from notify_relay.adapters.aws.sqs import SqsQueue

    session = botocore.session.get_session()
    # botocore's standard mode: more transient errors retried than the legacy mode, with
    # jittered backoff and a retry quota that stops a storm. DynamoDB keeps the legacy
    # mode's 10 attempts in all (throttles are its usual transient error); the others 4.
    from notify_relay.lambdas import AWS_CALLS_IN_FLIGHT

    config = Config(retries={"mode": "standard", "total_max_attempts": 4},
                    max_pool_connections=AWS_CALLS_IN_FLIGHT)
    dynamodb = cast("DynamoDBClient", session.create_client("dynamodb", config=Config(
        retries={"mode": "standard", "total_max_attempts": 10},
        max_pool_connections=AWS_CALLS_IN_FLIGHT)))
    signer = StandardWebhooksSigner(settings.signing_secrets)
    network = NetworkPolicy(settings.allow_networks)
    limits = settings.retry_limits
    http_deliverer = None
    if worker:
        from notify_relay.adapters.http import HttpDeliverer

        http_deliverer = HttpDeliverer(network)
    observer = observer or NullObserver()
    queue = SqsQueue(cast("SQSClient", session.create_client("sqs", config=config)),
                     settings.queue_urls,
                     settings.dead_letter_url,
                     deletes_by_caller=worker)
    gate = Gate(
        DynamoDestinationStore(dynamodb, settings.destinations_table, settings.table),
        settings.destination_rules,
        shared=True,
        limiter=DynamoSlotLimiter(dynamodb, settings.destinations_table),
        observer=observer,
        cache_seconds=1.0,
        flush_seconds=30.0,
        paused_seconds=settings.paused_recheck,
        # a slot's lease and a probe's turn outlast the longest attempt of a worker Lambda
        probe_seconds=limits.max_timeout + 60.0,
    )
    relay = Relay(
        store=DynamoStore(dynamodb, settings.table,
                          cast("S3Client", session.create_client("s3", config=config)),
                          settings.bucket,
                          retention=timedelta(days=settings.retention_days or 36500),
                          destinations_table=settings.destinations_table),
        queue=queue,
        deliverer=http_deliverer or NoDelivery(),
        gate=gate,
        limits=limits,
        network=network,
        signer=signer,
        observer=observer,
        schedule_cap=timedelta(seconds=settings.deliver_at_cap),
    )
    runtime = Runtime(relay=relay, auth=Authenticator.from_principals(settings.iam_senders),
                      dead_letters=queue)
    if worker and settings.signing_secrets_arn:  # only the worker signs (and may read it)
        from notify_relay.adapters.aws.secrets import signing_secrets

        manager = cast("SecretsManagerClient",
                       session.create_client("secretsmanager", config=config))
        arn = settings.signing_secrets_arn

        async def read_signing_secrets() -> None:
            signer.add(signing_secrets(manager, arn))

        runtime.starts.append(read_signing_secrets)  # first: a failure leaves nothing open
    if http_deliverer is not None:
        runtime.starts.append(http_deliverer.open)
        runtime.stops.append(http_deliverer.close)
    return runtime
