"""Every adapter of a port, for the contract suites to run against."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_relay.adapters.aws.destinations import DynamoDestinationStore
from notify_relay.adapters.aws.dynamodb import DynamoStore
from notify_relay.adapters.aws.sqs import SqsQueue, queue_name
from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.adapters.sqlite import (
    SqliteDatabase,
    SqliteDestinationStore,
    SqliteQueue,
    SqliteStore,
)
from notify_relay.ports import DestinationStore, MessageStore, WorkQueue
from tests.aws.moto import AwsResources, client


def dynamo_stores(aws: AwsResources) -> tuple[MessageStore, DestinationStore]:
    """The DynamoDB message store and its destination store, on moto's server."""
    dynamodb = client("dynamodb", aws.endpoint)
    messages = DynamoStore(dynamodb, aws.table, client("s3", aws.endpoint), aws.bucket,
                           destinations_table=aws.destinations_table)
    return messages, DynamoDestinationStore(dynamodb, aws.destinations_table, aws.table)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    yield db
    db.close()


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "dynamodb":
        aws: AwsResources = request.getfixturevalue("aws")
        yield DynamoStore(client("dynamodb", aws.endpoint), aws.table,
                          client("s3", aws.endpoint), aws.bucket)
        return
    db = SqliteDatabase(tmp_path / "store.db")
    db.open()
    yield SqliteStore(db)
    db.close()


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[MessageStore, DestinationStore]]:
    """A message store and the destination store beside it (messages put destinations on
    record, and count as pending)."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory, memory.destinations
        return
    if request.param == "dynamodb":
        aws: AwsResources = request.getfixturevalue("aws")
        yield dynamo_stores(aws)
        return
    db = SqliteDatabase(tmp_path / "destinations.db")
    db.open()
    yield SqliteStore(db), SqliteDestinationStore(db)
    db.close()


QueueFactory = Callable[[FakeClock], WorkQueue]


@pytest.fixture(params=["memory", "sqlite", "sqs", "sqs-shards"])
async def queue(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[WorkQueue]:
    if request.param == "memory":
        yield MemoryQueue(clock)
        return
    if request.param.startswith("sqs"):
        aws: AwsResources = request.getfixturevalue("aws")
        sqs = client("sqs", aws.endpoint)
        urls = [aws.queue_url]
        if request.param == "sqs-shards":  # as prod deploys it: entries spread by destination
            urls += [sqs.create_queue(QueueName=f"{queue_name(aws.queue_url)}-{shard}")[
                "QueueUrl"] for shard in (1, 2)]
        yield SqsQueue(sqs, urls, aws.dead_letter_url, clock=clock)
        return
    db = SqliteDatabase(tmp_path / "queue.db")
    db.open()
    yield SqliteQueue(db, clock)
    db.close()
