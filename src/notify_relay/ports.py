"""The small interfaces between the service and the outside world.

Every adapter of a port passes the same contract test suite (tests/contract/).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from notify_relay.domain.destination import BreakerState, Destination, DestinationKey
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.retry import AttemptResult
from notify_relay.domain.status import Status


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Message]
    next_cursor: str | None


class MessageStore(Protocol):
    """Durable record of every message: returns only once the write is durable (an
    attempt's outcome, update_settled, may be durable against a crash only)."""

    async def create(self, message: Message) -> tuple[Message, bool]:
        """Store `message` unless its key exists; returns (stored message, created).

        The message's destination is on record afterwards (DestinationStore lists it).
        """
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
        """Newest first; `cursor` is opaque, from a previous page; InvalidCursor on a bad one."""
        ...

    async def failed_between(
        self, sender_id: str, destination: str | None, since: datetime, until: datetime,
        limit: int,
    ) -> Sequence[Message]:
        """The sender's FAILED messages (of `destination`, when given) that failed at or
        after `since` and before `until`, at most `limit`, without their bodies; read
        through an index, never a scan of every message. The order is the store's (SQLite:
        earliest failure first; DynamoDB: earliest created first)."""
        ...

    async def expire(self, changed_before: datetime, limit: int) -> int:
        """Delete up to `limit` final messages (DELIVERED, FAILED, CANCELLED) last changed
        before `changed_before`, with their bodies and attempts; returns how many, which
        may be fewer than `limit` while more are due (SQLite bounds a batch's bodies too):
        done when it returns 0. A store whose records expire by themselves (DynamoDB's TTL)
        deletes none here."""
        ...

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        """QUEUED messages whose enqueue never happened (the dual-write gap)."""
        ...

    async def ping(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DestinationPage:
    items: Sequence[Destination]
    next_cursor: str | None


class DestinationStore(Protocol):
    """Durable settings and breaker state of each destination, one record per destination."""

    async def get(self, key: DestinationKey) -> Destination | None: ...

    async def save(self, destination: Destination) -> Destination:
        """Write if the stored version is `destination.version` (0: none stored yet);
        raises StaleWrite. Returns it with its new version."""
        ...

    async def list(
        self, sender_id: str, state: BreakerState | None, limit: int, cursor: str | None
    ) -> DestinationPage:
        """The sender's destinations that have had messages or settings, by name."""
        ...

    async def pending(self, key: DestinationKey) -> int:
        """How many of its messages are not final."""
        ...

    async def active(self) -> Sequence[Destination]:
        """Every record with settings or a breaker that is not closed: what an embedded
        gate loads at start (a scan on stores shared at scale: not for the hot path)."""
        ...


class SlotLimiter(Protocol):
    """Attempts in flight per destination across processes that share no memory (Lambdas).

    Each slot is a lease: a holder that dies frees its slot when the lease ends.
    """

    async def acquire(self, key: DestinationKey, limit: int, lease_seconds: float) -> str | None:
        """A token for one of the first `limit` slots, or None when all are taken."""
        ...

    async def release(self, key: DestinationKey, token: str) -> None: ...

    async def in_use(self, key: DestinationKey, limit: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry to queue: what WorkQueue.enqueue takes, for enqueue_many."""

    key: MessageKey
    due_at: datetime
    correlation_id: str | None = None
    destination: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    """A claimed message whose attempt its claim started, in the same transaction: `before`
    as the claim read it, `after` as it wrote it (DELIVERING, with its new version)."""

    before: Message
    after: Message


@dataclass(frozen=True, slots=True)
class Claim:
    """A lease on one queue entry: invisible to other claims until `lease_until`.

    `destination` is the destination's name where the queue knows it; `correlation_id`
    the request's that queued the entry, where the queue carries it (SQS), so that a
    rescheduled or dead-lettered entry keeps it. `source` names the queue the entry was
    received from, where the queue has several (SQS's shards): a receipt is valid there
    only.
    """

    key: MessageKey
    receipt: str
    lease_until: datetime
    destination: str | None = None
    correlation_id: str | None = None
    source: str | None = None
    started: Started | None = None  # StartingQueue.claim_started only

    @property
    def destination_key(self) -> DestinationKey | None:
        if self.destination is None:
            return None
        return DestinationKey(self.key.sender_id, self.destination)


# How many attempts a destination may start now: a queue that can choose skips
# destinations with none, so their backlog never occupies delivery slots.
Slots = Callable[[DestinationKey], int]


class WorkQueue(Protocol):
    """At-least-once queue of message keys, with leases and delayed visibility.

    `exclusive_claims`: whether a leased entry is never handed to a second claim while
    its lease holds (SQLite, memory); a standard SQS queue may deliver it twice.
    """

    exclusive_claims: bool

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None,
        destination: str = "",
    ) -> None:
        """Make `key` due at `due_at`, as work for `destination`.

        Idempotent while the key is queued where the queue can be (SQLite, memory): an
        entry not leased becomes due at `due_at` if that is earlier (a message retried by
        hand while a cancelled attempt's entry still waits), else stays as it is. SQS
        cannot, and the Relay's `queued` flag and conditional updates cover that.
        """
        ...

    async def enqueue_many(self, entries: Sequence[Entry]) -> None:
        """enqueue() for each, in as few calls as the queue allows (one SQLite
        transaction; SQS batches of 10). All or none is not promised: a failure leaves
        some queued, and enqueueing again is the caller's repair, as for enqueue()."""
        ...

    async def claim(
        self, limit: int, lease_seconds: float, slots: Slots | None = None
    ) -> Sequence[Claim]:
        """Lease up to `limit` due entries, oldest due first.

        With `slots`, at most `slots(d)` entries of each destination d, destinations taken
        in turn (least recently served first). A queue that cannot select by destination
        (SQS) ignores it; the Relay then holds what the destination cannot take.
        """
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

    async def next_due(self, slots: Slots | None = None) -> datetime | None:
        """When the earliest entry becomes claimable, for the worker's sleep; with
        `slots`, among destinations that may start an attempt."""
        ...

    async def recover(self) -> int:
        """Release every lease taken by an earlier process; returns how many."""
        ...

    async def depth(self) -> int: ...

    async def ping(self) -> None: ...


@runtime_checkable
class QueueInStore(Protocol):
    """A MessageStore whose WorkQueue lives in the same database (SQLite): a message and
    its queue entry change in one transaction, one commit where there were two or three.
    The Relay uses it where the store has it; SQS and DynamoDB cannot share one."""

    async def create_queued(self, message: Message) -> tuple[Message, bool]:
        """create(), with a new message's queue entry (due at its next_attempt_at) in the
        same transaction, so it is stored already queued. An existing message comes back
        untouched, as from create()."""
        ...

    async def update_queued(self, message: Message, due_at: datetime) -> Message:
        """update() of a message marked queued, with its queue entry (due at `due_at`) in the
        same transaction: a retry by hand in one write, where it took three (the message,
        its entry, the mark), between which a claim could find it half done. StaleWrite
        leaves both as they were."""
        ...

    async def update_settled(self, message: Message, claim: Claim) -> Message:
        """update() with an attempt's outcome, and the claimed entry settled in the same
        transaction: due again at next_attempt_at while RETRYING, dropped otherwise.
        StaleWrite leaves both as they were. A record, not an answer: SQLite may commit it
        without an fsync of its own (a power loss takes it back; the message goes again)."""
        ...

    async def update_dequeued(self, message: Message) -> Message:
        """update() with the message's queue entry deleted in the same transaction, leased
        or not (a cancel): left to the worker, it waited until it came due, a deliverAt up
        to 30 days ahead, counted in the queue's depth all along. A worker holding its lease
        finds the message final, or its own write stale. StaleWrite leaves both as they
        were."""
        ...


@runtime_checkable
class StartingQueue(Protocol):
    """A WorkQueue whose store shares its database (SQLite) can start each claimed
    message's attempt in the claim's own transaction: one write of three per attempt
    fewer, and no commit to wait for between the claim and the request."""

    async def claim_started(
        self, limit: int, lease_seconds: float, slots: Slots | None,
        start: Callable[[Message], Message | None], body_bytes: int | None = None,
        body_bytes_of: Callable[[DestinationKey], int] | None = None,
    ) -> Sequence[Claim]:
        """claim(); for each claimed message that `start` (pure) turns into the message to
        write, that is written too, in the claim's transaction, and the claim carries both
        (`started`). Where `start` gives None, or the message is missing or cannot be read,
        the claim carries none and the message is untouched. A queue that reads before its
        write (SQLite) starts a message that changed in between as it is at the write. Like
        update_settled, a record: SQLite may commit it without an fsync of its own.

        `body_bytes`: claim no more once the claimed messages' bodies reach it, nor a
        message whose body would pass it (one message at least), so that bodies read in one
        claim and held by attempts in flight stay bounded whatever their size.
        `body_bytes_of`: a bound for each destination's messages, which the last one read
        may pass (a destination that `slots` lets in takes one at least), so that a few
        destinations with big bodies cannot take all of it."""
        ...


@runtime_checkable
class OutboxStore(Protocol):
    """A MessageStore whose own change feed queues messages: the outbox (DynamoDB: its
    stream, read by the outbox Lambda, which sends to SQS). A write that leaves a message
    QUEUED and marked queued, when it was not both before, is queued after it commits, at
    least once. The Relay then never calls the queue to add work: nothing can be stored
    but never queued, and there is nothing to reconcile."""

    queued_by_outbox: bool  # a marker: True

    async def create_queued(self, message: Message) -> tuple[Message, bool]:
        """create() of the message marked queued: the outbox queues it once committed."""
        ...


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


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry of the dead-letter queue; `key` is None for a body that is not an entry."""

    key: MessageKey | None
    by_worker: bool
    receipt: str


class DeadLetterSweeper(Protocol):
    """A dead-letter queue that can be looked at without consuming it (SQS's)."""

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to `limit` entries, hidden for a while but not removed."""
        ...

    async def drop_dead_letter(self, letter: DeadLetter) -> None: ...


class Signer(Protocol):
    """Adds a signature to a sender's requests, where the sender has a secret."""

    def headers(self, message: Message, now: datetime) -> Sequence[tuple[str, str]]: ...


class NoSigning:
    def headers(self, message: Message, now: datetime) -> Sequence[tuple[str, str]]:
        return ()


class Observer(Protocol):
    """Hooks for metrics; every adapter may ignore what it does not count."""

    def submission(self, result: str, code: str | None = None) -> None: ...

    def attempt(self, outcome: str, duration_seconds: float) -> None: ...

    def delivered(self, latency_seconds: float) -> None: ...

    def first_attempt(self, delay_seconds: float) -> None:
        """A message's first attempt started this long after it was due (its acceptance,
        or its deliverAt): the relay's own delay, whatever the partner does."""

    def dead_lettered(self) -> None: ...

    def breaker_transition(self, old: str, new: str) -> None: ...

    def held(self, reason: str) -> None: ...

    def quarantined(self) -> None: ...


class NullObserver:
    def submission(self, result: str, code: str | None = None) -> None:
        return None

    def attempt(self, outcome: str, duration_seconds: float) -> None:
        return None

    def delivered(self, latency_seconds: float) -> None:
        return None

    def first_attempt(self, delay_seconds: float) -> None:
        return None

    def dead_lettered(self) -> None:
        return None

    def breaker_transition(self, old: str, new: str) -> None:
        return None

    def held(self, reason: str) -> None:
        return None

    def quarantined(self) -> None:
        return None
