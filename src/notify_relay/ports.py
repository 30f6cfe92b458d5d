"""The small interfaces between the service and the outside world.

Every adapter of a port passes the same contract test suite (tests/contract/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.retry import AttemptResult
from notify_relay.domain.status import Status


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Message]
    next_cursor: str | None


class MessageStore(Protocol):
    """Durable record of every message: returns only once the write is durable."""

    async def create(self, message: Message) -> tuple[Message, bool]:
        """Store `message` unless its key exists; returns (stored message, created)."""
        ...

    async def get(self, key: MessageKey, *, with_body: bool = True) -> Message | None:
        """The message; `with_body=False` may leave `content.body` None, to spare fetching a
        large body (S3) for a read or a status change, which never write the body."""
        ...

    async def update(self, message: Message) -> Message:
        """Write `message` if the stored version is `message.version`; raises StaleWrite.

        Returns the message with its new version.
        """
        ...

    async def list(
        self, sender_id: str, status: Status | None, limit: int, cursor: str | None
    ) -> Page:
        """Newest first; `cursor` is opaque, from a previous page; ValueError on a bad one."""
        ...

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        """QUEUED messages whose enqueue never happened (the dual-write gap)."""
        ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on one queue entry: invisible to other claims until `lease_until`."""

    key: MessageKey
    receipt: str
    lease_until: datetime


class WorkQueue(Protocol):
    """At-least-once queue of message keys, with leases and delayed visibility."""

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None
    ) -> None:
        """Make `key` due at `due_at`.

        Idempotent while the key is queued where the queue can be (SQLite, memory); SQS
        cannot, and the Relay's `queued` flag and conditional updates cover that.
        """
        ...

    async def claim(self, limit: int, lease_seconds: float) -> Sequence[Claim]:
        """Lease up to `limit` due entries, oldest due first."""
        ...

    async def complete(self, claim: Claim) -> None:
        """Drop the entry; a no-op when the lease was lost to another claim."""
        ...

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        """Release the entry to become due again at `due_at`."""
        ...

    async def dead_letter(self, claim: Claim) -> None:
        """Drop an undeliverable entry; a queue with a dead-letter queue moves it there."""
        ...

    async def next_due(self) -> datetime | None:
        """When the earliest entry becomes claimable, for the worker's sleep."""
        ...

    async def recover(self) -> int:
        """Release every lease taken by an earlier process; returns how many."""
        ...

    async def depth(self) -> int: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    url: str
    method: str
    headers: Sequence[tuple[str, str]]
    body: bytes | None
    timeout_seconds: float


class Deliverer(Protocol):
    """Sends one request to a partner, never follows redirects, never raises for I/O."""

    async def send(self, request: OutboundRequest) -> AttemptResult: ...


class Observer(Protocol):
    """Hooks for metrics; every adapter may ignore what it does not count."""

    def submission(self, result: str, code: str | None = None) -> None: ...

    def attempt(self, outcome: str, duration_seconds: float) -> None: ...

    def delivered(self, latency_seconds: float) -> None: ...

    def dead_lettered(self) -> None: ...


class NullObserver:
    def submission(self, result: str, code: str | None = None) -> None:
        return None

    def attempt(self, outcome: str, duration_seconds: float) -> None:
        return None

    def delivered(self, latency_seconds: float) -> None:
        return None

    def dead_lettered(self) -> None:
        return None
