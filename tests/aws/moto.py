"""moto's server over HTTP on 127.0.0.1, and the resources the CDK stack defines, made with boto3.

The table definitions mirror infra/notify_relay_infra/storage.py; tests/infra checks the
stack's side of them.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from tests.sockets import free_port

REGION = "eu-west-1"
WsgiApp = Callable[..., Iterable[bytes]]


class _OneDynamoRequestAtATime:
    """WSGI wrapper: DynamoDB applies each conditional write atomically, moto's threaded
    server does not (two racing writes can both pass its check). Serializing DynamoDB
    requests gives the tests DynamoDB's guarantee; SQS and S3 stay concurrent."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self._app(environ, start_response)
        with self._lock:
            result = self._app(environ, start_response)
            try:
                return list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


class SerializedMotoServer(ThreadedMotoServer):
    def __init__(self, *args: Any, wrap: Callable[[WsgiApp], WsgiApp] | None = None,
                 **kwargs: Any) -> None:
        """`wrap`: a WSGI middleware put around moto's app, inside the serialization of
        DynamoDB requests (tests/aws/metering.py counts there)."""
        super().__init__(*args, **kwargs)
        self._wrap = wrap

    def _server_entry(self) -> None:
        app: WsgiApp = DomainDispatcherApplication(create_backend_app)
        if self._wrap is not None:
            app = self._wrap(app)
        app = _OneDynamoRequestAtATime(app)
        self._server = make_server(self._ip_address, self._port, app, True,
                                   request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def start_moto(wrap: Callable[[WsgiApp], WsgiApp] | None = None
               ) -> tuple[ThreadedMotoServer, str]:
    port = free_port()
    server = SerializedMotoServer(ip_address="127.0.0.1", port=port, verbose=False, wrap=wrap)
    server.start()
    return server, f"http://127.0.0.1:{port}"


_session_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def client(service: str, endpoint: str) -> Any:
    """A new client, from one session for all: a new session loads botocore's JSON models
    and endpoint rules again (~0.1 s a client). A session is not thread-safe; the clients
    it makes are, each with its own events and connections."""
    with _session_lock:
        return _session().client(
            service, region_name=REGION, endpoint_url=endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing")


def _gsi(name: str, partition: str, sort: str, projection: str = "ALL",
         included: tuple[str, ...] = ()) -> dict[str, Any]:
    index: dict[str, Any] = {
        "IndexName": name,
        "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"},
                      {"AttributeName": sort, "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": projection}}
    if included:
        index["Projection"]["NonKeyAttributes"] = list(included)
    return index


# as infra/notify_relay_infra/storage.py defines them, projections included: the write
# units counted on moto (tests/aws/metering.py) follow from them
MESSAGE_INDEXES = [
    _gsi("bySender", "listShard", "sortKey", "KEYS_ONLY"),
    _gsi("bySenderStatus", "statusShard", "sortKey", "INCLUDE", ("updatedAt",)),
    _gsi("destPending", "destPending", "createdAt", "KEYS_ONLY"),
]


@dataclass
class AwsResources:
    endpoint: str
    table: str
    queue_url: str
    dead_letter_url: str
    bucket: str
    destinations_table: str
    shard_urls: tuple[str, ...] = ()  # with work_queues > 1: every shard, queue_url first

    @property
    def queue_urls(self) -> tuple[str, ...]:
        return self.shard_urls or (self.queue_url,)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "NOTIFY_RELAY_TABLE": self.table,
            "NOTIFY_RELAY_DESTINATIONS_TABLE": self.destinations_table,
            "NOTIFY_RELAY_QUEUE_URL": ",".join(self.queue_urls),
            "NOTIFY_RELAY_DEAD_LETTER_URL": self.dead_letter_url,
            "NOTIFY_RELAY_BUCKET": self.bucket,
            "NOTIFY_RELAY_VISIBILITY_TIMEOUT": "2",
            "NOTIFY_RELAY_PAUSED_RECHECK": "1",
            **extra,
        }


def create_resources(endpoint: str, max_receive_count: int = 3,
                     work_queues: int = 1) -> AwsResources:
    """`work_queues`: the work queue's shards, each redriven to the one dead-letter queue,
    as the stack makes them."""
    suffix = uuid.uuid4().hex[:10]
    dynamodb = client("dynamodb", endpoint)
    table = f"messages-{suffix}"
    attributes = ["pk", "listShard", "sortKey", "statusShard", "createdAt", "destPending"]
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=MESSAGE_INDEXES,
        # the outbox reads it (tests/aws/lambda_harness.StreamEventSource drives it)
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    destinations = f"destinations-{suffix}"
    dynamodb.create_table(
        TableName=destinations,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    sqs = client("sqs", endpoint)
    dlq = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    queues = tuple(sqs.create_queue(QueueName=f"work-{suffix}" + (f"-{i}" if i else ""),
                                    Attributes={
        "VisibilityTimeout": "2",
        "RedrivePolicy": orjson.dumps({"deadLetterTargetArn": dlq_arn,
                                       "maxReceiveCount": str(max_receive_count)}).decode(),
    })["QueueUrl"] for i in range(work_queues))
    bucket = f"bodies-{suffix}"
    client("s3", endpoint).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return AwsResources(endpoint, table, queues[0], dlq, bucket, destinations,
                        queues if work_queues > 1 else ())
