"""The use cases: accept a submission, deliver one claimed message, retry by hand, reconcile.

No framework here: the API, the embedded worker and the Lambdas all call this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast
from urllib.parse import urlsplit

from notify_relay import __version__, logs
from notify_relay.clock import utcnow
from notify_relay.domain.callback import (
    callback_state,
    incarnation_of,
    is_notice,
    is_orphan,
    latest_notice_key,
    notice_due,
    outcome_notice,
    parent_of,
    tells_of,
)
from notify_relay.domain.delivery import outbound_headers
from notify_relay.domain.destination import DestinationKey
from notify_relay.domain.errors import (
    CorruptRecord,
    FieldError,
    IdempotencyConflict,
    InvalidState,
    NotFound,
    NotifyRelayError,
    StaleWrite,
    StoreUnavailable,
    TargetNotAllowed,
    ValidationFailed,
)
from notify_relay.domain.message import STOPPED_ERROR, Message, MessageKey
from notify_relay.domain.network import NetworkPolicy
from notify_relay.domain.retry import (
    AttemptResult,
    Decision,
    ErrorKind,
    Outcome,
    RetryLimits,
    decide,
)
from notify_relay.domain.status import Status
from notify_relay.domain.submission import NewMessage
from notify_relay.gate import Gate, Ticket
from notify_relay.ports import (
    Claim,
    Deliverer,
    Entry,
    MessageStore,
    NoSigning,
    NullObserver,
    Observer,
    OutboundRequest,
    OutboxStore,
    Page,
    QueueInStore,
    Signer,
    WorkQueue,
)

log = logging.getLogger("notify_relay.service")
# beyond an attempt's timeout, the time its worker may still need to record the result
IN_FLIGHT_MARGIN_SECONDS = 30.0
T = TypeVar("T")
RECORD_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
# how long a stop waits to record each attempt it abandoned (Relay._cut_short)
CUT_SHORT_WRITE_SECONDS = 2.0
# what an attempt needs after its timeout: its outcome's writes, through store faults
# (RECORD_RETRY_DELAYS: 8.6 s), its destination's record (behind its batch-mates' writes)
# and a notice
DEADLINE_MARGIN_SECONDS = 20.0
REDRIVEN_ERROR = "the queue dead-lettered this message after its processing failed repeatedly"


CANCEL_TRIES = 3
DEFAULT_SCHEDULE_CAP = timedelta(days=30)


def _log_attempt(message: Message, number: int, status_code: int | None, error: str | None,
                 outcome: Outcome, duration_ms: int, *, sent_twice: bool = False) -> None:
    """Every attempt's line, in its message's state once recorded; `sentTwice` only on the
    rare attempt whose request went again (AttemptResult.sent_twice), for a partner that
    asks why it had one twice within milliseconds."""
    if log.isEnabledFor(logging.INFO):
        fields = {
            **message_context(message), "attempt": number, "statusCode": status_code,
            "error": error, "outcome": outcome.value, "durationMs": duration_ms,
            "destination": message.destination,
            "targetHost": urlsplit(message.content.target_url).hostname,
            "nextAttemptAt": message.next_attempt_at.isoformat()
            if message.next_attempt_at else None}
        if sent_twice:
            fields["sentTwice"] = True
        logs.info(log, "attempt", fields)


def _log_interrupted(before: Message, started: Message) -> None:
    """The line of an attempt that a crash cut short, which the next start records
    (Message.start_attempt): it had none, as its worker died before its line."""
    if before.status is Status.DELIVERING:  # start_attempt recorded it, last
        attempt = started.attempts[-1]
        _log_attempt(started, attempt.number, None, attempt.error, attempt.outcome,
                     attempt.duration_ms)


def message_context(message: Message, request_cid: str | None = None) -> dict[str, object]:
    """The fields every log line about a message carries; in a line caused by a request,
    `correlationId` is that request's, and the message's own is `messageCorrelationId`."""
    context: dict[str, object] = {
        "messageId": message.key.message_id,
        "senderId": message.key.sender_id,
        "correlationId": request_cid or message.correlation_id,
    }
    if request_cid and request_cid != message.correlation_id:
        context["messageCorrelationId"] = message.correlation_id
    return context


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class OutcomeNotRecorded(Exception):
    """The partner was sent the request, and its outcome could not be written even after
    retrying (the store is unwritable). The entry should come back only when its lease
    ends: sooner would send the request again every few seconds."""


@dataclass(frozen=True, slots=True)
class Replayed:
    replayed: int
    more: bool


@dataclass(slots=True)
class _Held:
    """The ticket an attempt holds until it is spent or given back."""

    ticket: Ticket | None


@dataclass(frozen=True, slots=True)
class Accepted:
    message: Message
    duplicate: bool


_CAPABILITIES: dict[type, tuple[bool, bool]] = {}


def _capabilities(store: MessageStore) -> tuple[bool, bool]:
    """Whether a store is a QueueInStore, an OutboxStore: by its class, once. An isinstance
    check against a runtime Protocol inspects every member (about 10 µs); it was made for
    each submission and each attempt's outcome."""
    kind = type(store)
    found = _CAPABILITIES.get(kind)
    if found is None:
        found = _CAPABILITIES[kind] = (isinstance(store, QueueInStore),
                                       isinstance(store, OutboxStore))
    return found


@dataclass(slots=True)
class Relay:
    store: MessageStore
    queue: WorkQueue
    deliverer: Deliverer
    gate: Gate
    limits: RetryLimits = field(default_factory=RetryLimits)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    signer: Signer = field(default_factory=NoSigning)
    observer: Observer = field(default_factory=NullObserver)
    on_scheduled: Callable[[datetime], None] = lambda due_at: None
    clock: Callable[[], datetime] = utcnow
    rand: Callable[[], float] = random.random
    schedule_cap: timedelta = DEFAULT_SCHEDULE_CAP  # how far ahead deliverAt may be
    user_agent: str = f"notify-relay/{__version__}"

    # -- submission side ---------------------------------------------------------------

    async def submit(self, new: NewMessage, sender_id: str, correlation_id: str) -> Accepted:
        """A batch of one: the same judging, storing and queueing as submit_many."""
        (result,) = await self.submit_many([(new, sender_id)], correlation_id)
        if isinstance(result, NotifyRelayError):
            raise result
        return result

    async def submit_many(
        self, items: Sequence[tuple[NewMessage, str]], correlation_id: str
    ) -> list[Accepted | NotifyRelayError]:
        """Each (submission, sender) judged on its own, answered in order; an id given
        twice is judged as a resubmission of its first. The creates go to the store at
        once (SQLite: one group-committed transaction; DynamoDB: conditional puts in
        parallel), the new entries to the queue in one call (SQLite: one transaction; SQS:
        SendMessageBatch). A store or queue failure raises: the whole batch may then be
        sent again, as every item is idempotent by its messageId."""
        now = self.clock()
        results: list[Accepted | NotifyRelayError | None] = [None] * len(items)
        firsts: list[tuple[int, Message]] = []
        repeats: list[tuple[int, Message]] = []
        seen: set[MessageKey] = set()
        for index, (new, sender_id) in enumerate(items):
            try:
                message = self._prepare(new, sender_id, correlation_id, now)
            except NotifyRelayError as exc:
                results[index] = exc
                continue
            (repeats if message.key in seen else firsts).append((index, message))
            seen.add(message.key)
        unqueued: dict[MessageKey, Message] = {}
        # where the queue shares the store's database, or the store's outbox queues what
        # it stores, a new message is stored queued
        store = self.store
        create = (cast("QueueInStore", store).create_queued if any(_capabilities(store))
                  else store.create)
        for group in (firsts, repeats):
            if not group:
                continue
            # one item (every single submission): awaited as it is, no task to gather
            created = ([await create(group[0][1])] if len(group) == 1
                       else await asyncio.gather(*(create(m) for _, m in group)))
            for (index, message), (stored, is_new) in zip(group, created, strict=True):
                try:
                    results[index] = self._judge(message, stored, is_new, correlation_id)
                except IdempotencyConflict as exc:
                    results[index] = exc
                    continue
                if is_new and stored.queued:
                    self.on_scheduled(stored.next_attempt_at or now)
                elif stored.status is Status.QUEUED and not stored.queued:
                    unqueued.setdefault(stored.key, stored)
        if unqueued and not self._outbox:  # with an outbox, marking them queues them
            await self.queue.enqueue_many([
                Entry(m.key, m.next_attempt_at or now, m.correlation_id, m.destination)
                for m in unqueued.values()])
            for message in unqueued.values():
                self.on_scheduled(message.next_attempt_at or now)
        if unqueued:
            marked = await asyncio.gather(*(self._mark_queued(m) for m in unqueued.values()))
            queued = {m.key: m for m in marked}
            for index, result in enumerate(results):
                if isinstance(result, Accepted) and result.message.key in queued:
                    results[index] = Accepted(queued[result.message.key], result.duplicate)
        answered = [r for r in results if r is not None]
        if len(answered) != len(items):  # every item is judged above: a bug otherwise
            raise RuntimeError("submit_many left an item unanswered")
        return answered

    def _prepare(self, new: NewMessage, sender_id: str, correlation_id: str,
                 now: datetime) -> Message:
        """The message a submission makes, once the rules that need the server's
        settings hold (the network policy on literal addresses, the deliverAt cap)."""
        content = new.content
        for field_name, url in (("targetUrl", content.target_url),
                                ("callbackUrl", new.callback_url)):
            refusal = self.network.literal_refusal(urlsplit(url).hostname or "") if url else None
            if refusal is not None:
                raise TargetNotAllowed(f"{field_name}: {refusal}")
        if new.deliver_at is not None and new.deliver_at > now + self.schedule_cap:
            raise ValidationFailed([FieldError(
                "deliverAt", f"must be at most {_duration(self.schedule_cap)} ahead "
                             "(the server's cap)")])
        policy = self.limits.effective_policy(new.max_attempts, new.initial_delay,
                                              new.max_delay)
        return Message.new(
            MessageKey(sender_id, new.message_id),
            content,
            correlation_id=correlation_id,
            policy=policy,
            timeout_seconds=self.limits.effective_timeout(new.timeout_seconds),
            now=now,
            event_timestamp=new.event_time,
            destination=new.destination,
            deliver_at=new.deliver_at,
            callback_url=new.callback_url,
        )

    def _judge(self, message: Message, stored: Message, created: bool,
               correlation_id: str) -> Accepted:
        """New, a duplicate, or a conflict (only the content is compared)."""
        if created:
            if log.isEnabledFor(logging.INFO):
                logs.info(log, "accepted", message_context(stored))
            return Accepted(stored, duplicate=False)
        if stored.fingerprint != message.fingerprint:
            raise IdempotencyConflict(
                f"messageId {message.key.message_id} was accepted with different content")
        if log.isEnabledFor(logging.INFO):
            log.info("duplicate submission", extra=message_context(stored, correlation_id))
        return Accepted(stored, duplicate=True)

    @property
    def _outbox(self) -> bool:
        return _capabilities(self.store)[1]

    @property
    def _in_store(self) -> QueueInStore | None:
        """The store, where the queue shares its database (QueueInStore), else None."""
        return cast("QueueInStore", self.store) if _capabilities(self.store)[0] else None

    async def _enqueue(self, message: Message) -> Message:
        """Queue, then record that it is queued: a crash between leaves it to reconcile().
        With an outbox, the record alone: its commit queues the message."""
        if self._outbox:
            return await self._mark_queued(message)
        due_at = message.next_attempt_at or self.clock()
        await self.queue.enqueue(message.key, due_at, message.correlation_id, message.destination)
        self.on_scheduled(due_at)
        return await self._mark_queued(message)

    async def _mark_queued(self, message: Message) -> Message:
        """The message as queued; if a worker (or a twin submission) moved it on before
        this write, it was queued all the same, and the answer is still the state at
        queueing (QUEUED, as the contract's 202 says), not what happened since."""
        try:
            return await self.store.update(message.mark_queued())
        except StaleWrite:
            return message.mark_queued()

    async def get(self, key: MessageKey) -> Message:
        """The message as a reader sees it; its body is not fetched. Outcome notices are
        the relay's own messages: not the sender's to read or change."""
        message = await self.store.get(key, with_body=False) if not is_notice(key) else None
        if message is None:
            raise NotFound(f"no message {key.message_id} for sender {key.sender_id}")
        return await self._with_callback(await self._as_expected(message))

    async def list(
        self, sender_id: str, status: Status | None, limit: int, cursor: str | None
    ) -> Page:
        page = await self.store.list(sender_id, status, limit, cursor)
        async def view(message: Message) -> Message:
            return await self._with_callback(await self._as_expected(message))

        items = await asyncio.gather(*(view(m) for m in page.items))
        return Page(items, page.next_cursor)

    async def _with_callback(self, message: Message) -> Message:
        """With the state of its latest outcome notice, when one is due."""
        key = latest_notice_key(message)
        if key is None:
            return message
        notice = await self.store.get(key, with_body=False)
        if notice is None:
            return message
        return message.changed(callback=callback_state(await self._as_expected(notice)))

    async def _as_expected(self, message: Message) -> Message:
        """A waiting message shows when it is expected to go: later than its own time
        while its destination holds it back (no write: the destination knows)."""
        if message.status not in (Status.QUEUED, Status.RETRYING):
            return message
        expected = await self.gate.expected_at(message.destination_key, message.next_attempt_at)
        if expected == message.next_attempt_at:
            return message
        return message.changed(next_attempt_at=expected)

    async def retry(self, key: MessageKey, correlation_id: str | None = None) -> Message:
        """Queue a FAILED or CANCELLED message again with a fresh attempt budget."""
        return await self._retry(await self.get(key), correlation_id)

    async def _retry(self, message: Message, correlation_id: str | None) -> Message:
        retried = message.retry_by_hand(self.clock())
        shared = self._in_store
        # one write, QUEUED and marked queued: with its entry, or the outbox queues it
        if shared is not None or self._outbox:
            retried = retried.mark_queued()
        try:
            if shared is not None:
                due_at = retried.next_attempt_at or self.clock()
                message = await shared.update_queued(retried, due_at)
                self.on_scheduled(due_at)
            else:
                message = await self.store.update(retried)
        except StaleWrite:
            raise InvalidState("the message changed while it was being retried") from None
        log.info("retried by hand", extra=message_context(message, correlation_id))
        return message if message.queued else await self._enqueue(message)

    async def cancel(self, key: MessageKey, correlation_id: str | None = None) -> Message:
        """Stop a waiting message: once this returns, no attempt of it starts.

        The write is conditional: a worker that claimed the message before can no longer
        move it to DELIVERING (its write is stale), and if the worker won, the message is
        DELIVERING and cancelling is refused. Its queue entry goes in the same write where
        the queue shares the store (QueueInStore.update_dequeued); elsewhere (SQS) it is
        left to the worker, which drops entries of final messages.
        """
        shared = self._in_store
        for _ in range(CANCEL_TRIES):
            message = await self.store.get(key, with_body=False) if not is_notice(key) else None
            if message is None:
                raise NotFound(f"no message {key.message_id} for sender {key.sender_id}")
            try:  # cancel() raises InvalidState unless the message still waits
                cancelled = message.cancel(self.clock())
                message = await (shared.update_dequeued(cancelled) if shared is not None
                                 else self.store.update(cancelled))
            except StaleWrite:  # queued or claimed meanwhile: judge its new state
                continue
            log.info("cancelled", extra=message_context(message, correlation_id))
            return message
        raise InvalidState("the message kept changing while it was being cancelled; try again")

    async def replay(
        self, sender_id: str, destination: str | None, since: datetime | None,
        until: datetime | None, limit: int, correlation_id: str | None = None,
    ) -> Replayed:
        """Retry by hand up to `limit` FAILED messages that failed in [since, until)."""
        since = since or datetime.min.replace(tzinfo=UTC)
        until = until or datetime.max.replace(tzinfo=UTC)
        found = await self.store.failed_between(sender_id, destination, since, until,
                                                limit + 1)
        replayed = 0
        for message in found[:limit]:
            try:
                await self._retry(message, correlation_id)
            except InvalidState:  # retried or changed meanwhile: no longer a dead letter
                continue
            replayed += 1
        log.info("replayed", extra={"senderId": sender_id, "destination": destination,
                                    "replayed": replayed, "correlationId": correlation_id})
        return Replayed(replayed, len(found) > limit)

    async def reconcile(self, older_than: timedelta, limit: int = 500) -> int:
        """Queue messages that were stored but never queued; returns how many."""
        stranded = await self.store.unqueued(self.clock() - older_than, limit)
        for message in stranded:
            log.warning("queueing a message stored but never queued",
                        extra=message_context(message))
            await self._enqueue(message)
        return len(stranded)

    async def reconcile_dead_letter(self, key: MessageKey, by_worker: bool) -> bool:
        """Keep FAILED and the dead-letter queue in step; True when the entry should go.

        A worker dead-letters only what it has marked FAILED; if the message is no longer
        FAILED it was retried by hand since, and its old entry goes. An entry the queue's
        redrive policy moved there (its processing kept crashing) is a dead letter whose
        message never got an outcome: it is marked FAILED and kept.
        """
        message = await self.store.get(key, with_body=False)
        if message is not None and message.status.is_final:
            await self._release_held_notice(message)
        if message is None or message.status in (Status.DELIVERED, Status.CANCELLED):
            return True
        if message.status is Status.FAILED:
            return False
        if by_worker:
            return True
        now = self.clock()
        failed = message.start_attempt(now)
        if failed.status is not Status.FAILED:
            failed = failed.finish_attempt(
                AttemptResult(error_kind=ErrorKind.INVALID_REQUEST, error=REDRIVEN_ERROR),
                Decision(Outcome.GIVE_UP), started_at=now, duration_ms=0, now=now)
        failed, notice = await self._noticed(failed)
        await self.store.update(failed)
        self.observer.dead_lettered()
        log.warning("dead-lettered by the queue", extra=message_context(failed))
        await self._send_notice(notice)
        return False

    # -- delivery side -----------------------------------------------------------------

    def request_for(self, message: Message, now: datetime) -> OutboundRequest:
        signature = self.signer.headers(message, now)
        headers = [*outbound_headers(message, self.user_agent, signed=bool(signature)),
                   *signature]
        content = message.content
        return OutboundRequest(content.target_url, content.method, headers, content.body,
                               message.timeout_seconds)

    def start_claimed(self, message: Message) -> Message | None:
        """For StartingQueue.claim_started (pure: the queue writes what it returns): the
        claimed message with its attempt started, when nothing needs judging first; None
        sends it through deliver()'s own checks (final, a notice, woken early, a notice
        due at the start)."""
        if message.status.is_final or is_notice(message.key):
            return None
        now = self.clock()
        wait_until = self._not_before(message)
        if wait_until is not None and wait_until > now:
            return None
        started = message.start_attempt(now)
        return None if notice_due(started) else started

    async def admit(self, claim: Claim, destination: DestinationKey) -> Ticket | None:
        """Leave from the destination for one attempt; None when it holds the entry back,
        which then returns when the destination expects to take it. No attempt is spent:
        an attempt its claim started is put back as it was."""
        try:
            verdict = await self.gate.admit(destination)
        except Exception:
            await self._unstart(claim)
            raise
        if isinstance(verdict, Ticket):
            return verdict
        await self._unstart(claim)
        await self.queue.reschedule(claim, verdict.until)
        self.on_scheduled(verdict.until)
        return None

    async def release(self, claim: Claim) -> None:
        """A claim that will not be worked on (the worker stops): its start put back and
        its entry due again now, so that nothing takes it for an attempt cut short."""
        await self._unstart(claim)
        await self.queue.reschedule(claim, self.clock())

    async def _unstart(self, claim: Claim) -> None:
        """The message of a started claim as it was before (a conditional write: a change
        since wins); otherwise its next claim would take the start for a cut-short attempt."""
        if claim.started is None:
            return
        before, after = claim.started.before, claim.started.after
        try:
            await self.store.update(before.with_version(after.version))
        except StaleWrite:
            pass
        except Exception:
            log.exception("putting back an attempt that did not start failed",
                          extra=message_context(after))

    async def deliver(self, claim: Claim, ticket: Ticket | None = None, *,
                      deadline: datetime | None = None) -> None:
        """Make one attempt for a claimed entry and settle both the message and the entry.

        `ticket`: leave its destination already gave (the embedded worker asks before it
        claims more); without one, the destination is asked here. A ticket not spent on
        an attempt is given back, whatever happens. `deadline`: when this worker stops (a
        Lambda invocation's end); an attempt that could outlast it (its timeout and the
        writes after it) is not started, and the entry is due again at once.
        """
        held = _Held(ticket)
        try:
            await self._deliver(claim, held, deadline)
        finally:
            if held.ticket is not None:
                await self.gate.cancel(held.ticket)

    async def _deliver(self, claim: Claim, held: _Held, deadline: datetime | None) -> None:
        if claim.started is not None and held.ticket is not None and deadline is None:
            before = claim.started.before
            _log_interrupted(before, claim.started.after)
            await self._attempt(
                claim, held, held.ticket, claim.started.after,
                first=before.attempt_count == 0 and before.status is not Status.DELIVERING,
                due=max(before.created_at, before.next_attempt_at or before.created_at),
                notice=None)
            return
        if claim.started is not None:  # not that way (no leave yet, a deadline): as it was
            await self._unstart(claim)
        if held.ticket is None and claim.destination_key is not None:
            # ask the destination first: a held entry then costs no read of the message
            held.ticket = await self.admit(claim, claim.destination_key)
            if held.ticket is None:
                return
        try:
            message = await self.store.get(claim.key)
        except CorruptRecord as exc:  # poison: set aside, never retried forever
            await self.queue.dead_letter(claim)
            self.observer.quarantined()
            log.error("quarantined a message that cannot be read", extra={
                "messageId": claim.key.message_id, "senderId": claim.key.sender_id,
                "error": exc.message})
            return
        if message is None or message.status.is_final:
            if message is not None:
                await self._release_held_notice(message)
            await self.queue.complete(claim)
            await self._requeue_if_retried(claim.key)
            return
        if is_notice(message.key) and await self._orphan(message):
            await self.queue.complete(claim)
            return
        now = self.clock()
        wait_until = self._not_before(message)
        if wait_until is not None and wait_until > now:
            await self.queue.reschedule(claim, wait_until)
            self.on_scheduled(wait_until)
            return
        if deadline is not None and now + timedelta(
                seconds=message.timeout_seconds + DEADLINE_MARGIN_SECONDS) > deadline:
            # cut off mid-attempt, it would be sent again after a lease, maybe twice
            log.info("not started: the attempt could outlast this worker",
                     extra={**message_context(message), "deadline": deadline.isoformat()})
            await self.queue.reschedule(claim, now)
            self.on_scheduled(now)
            return
        if held.ticket is None:  # an entry that does not name its destination
            held.ticket = await self.admit(claim, message.destination_key)
            if held.ticket is None:
                return
        due = max(message.created_at, message.next_attempt_at or message.created_at)
        # not DELIVERING: a first attempt cut short (a crash) was already counted
        first = message.attempt_count == 0 and message.status is not Status.DELIVERING
        started_message, notice = await self._noticed(message.start_attempt(now))
        try:
            started_message = await self.store.update(started_message)
        except StaleWrite:
            await self.queue.reschedule(claim, now)
            self.on_scheduled(now)
            return
        _log_interrupted(message, started_message)
        message = started_message
        await self._attempt(claim, held, held.ticket, message, first=first, due=due,
                            notice=notice)

    async def _attempt(self, claim: Claim, held: _Held, ticket: Ticket, message: Message, *,
                       first: bool, due: datetime, notice: Message | None) -> None:
        """The request of an attempt started and written (DELIVERING), and its outcome."""
        if message.status is Status.FAILED:  # an interrupted last attempt used the budget
            await self._settle(claim, message, Outcome.GIVE_UP)
            await self._send_notice(notice)
            return

        started = self.clock()
        if first:
            self.observer.first_attempt(max(0.0, (started - due).total_seconds()))
        t0 = time.perf_counter()
        try:
            if ticket.probe:
                await self._begin_probe(ticket, message)
            result = await self.deliverer.send(self.request_for(message, started))
        except asyncio.CancelledError:  # the worker stops, its grace over
            held.ticket = None
            await self._cut_short(claim, ticket, message, started, time.perf_counter() - t0)
            raise
        except Exception as exc:  # one attempt's fault is recorded, never a lease loop
            log.exception("the attempt failed inside notify-relay", extra=message_context(message))
            result = AttemptResult(error_kind=ErrorKind.INVALID_REQUEST,
                                   error=f"{type(exc).__name__}: {exc}"[:500])
        elapsed = time.perf_counter() - t0
        finished = self.clock()
        held.ticket = None
        try:
            await self.gate.finish(ticket, result)
        except Exception:  # the attempt's own outcome must be recorded all the same
            log.exception("recording the attempt at its destination failed",
                          extra={**message_context(message), "destination": message.destination})
        decision = decide(result, attempt_in_round=message.attempt_in_round,
                          policy=message.policy, limits=self.limits, now=finished, rand=self.rand)
        shared = self._in_store
        outcome = message.finish_attempt(result, decision, started_at=started,
                                         duration_ms=round(elapsed * 1000), now=finished)
        try:  # the request is out: its notice (idempotent) and outcome go through faults
            noticed, notice = await self._through_faults(lambda: self._noticed(outcome),
                                                         outcome)
            message = await self._record(noticed, claim, shared)
        except StoreUnavailable as exc:
            raise OutcomeNotRecorded(str(exc)) from exc
        self.observer.attempt(decision.outcome.value, elapsed)
        _log_attempt(message, message.attempt_count, result.status_code, result.description,
                     decision.outcome, round(elapsed * 1000), sent_twice=result.sent_twice)
        await self._settle(claim, message, decision.outcome, entry_settled=shared is not None)
        await self._send_notice(notice)

    async def _begin_probe(self, ticket: Ticket, message: Message) -> None:
        try:
            await self.gate.begin(ticket)
        except Exception:  # the probe goes all the same; its result decides as from OPEN
            log.exception("recording a probe's start at its destination failed", extra={
                **message_context(message), "destination": message.destination})

    async def _cut_short(self, claim: Claim, ticket: Ticket, message: Message,
                         started: datetime, elapsed: float) -> None:
        """Record an attempt a clean stop abandoned (Message.cut_short), with its entry due
        again now. If that cannot be written within CUT_SHORT_WRITE_SECONDS, the message
        stays DELIVERING and the next start records it as interrupted, as after a crash."""
        now = self.clock()
        result = AttemptResult(error_kind=ErrorKind.INTERRUPTED, error=STOPPED_ERROR)
        outcome = message.cut_short(started_at=started, duration_ms=round(elapsed * 1000),
                                    now=now)
        shared = self._in_store
        try:
            async with asyncio.timeout(CUT_SHORT_WRITE_SECONDS):
                await self.gate.finish(ticket, result)
                recorded = await self._record(outcome, claim, shared)
                await self._settle(claim, recorded, Outcome.RETRY,
                                   entry_settled=shared is not None)
        except Exception:
            log.warning("recording an attempt cut short by the stop did not finish in time; "
                        "unless it still commits, the next start records it as interrupted",
                        extra=message_context(message), exc_info=True)

    async def _noticed(self, message: Message) -> tuple[Message, Message | None]:
        """`message` about to be written with its outcome, and the notice of it, if its
        sender asked: the notice is stored first, so that no crash between the two writes
        can lose it (at worst, a crash after it tells of an outcome the message then
        repeats, under another Idempotency-Key)."""
        if not notice_due(message):
            return message, None
        notice, created = await self.store.create(outcome_notice(
            message, policy=self.limits.default_policy,
            timeout_seconds=self.limits.default_timeout, now=self.clock()))
        if created or tells_of(notice, message):
            return message.changed(callback_notice=message.attempt_count,
                                   callback_notice_id=None), notice
        # the notice of an earlier message under this id, which retention deleted while its
        # notice was still stored: adopted, the new outcome was never told (helper-50)
        notice, _ = await self.store.create(outcome_notice(
            message, policy=self.limits.default_policy,
            timeout_seconds=self.limits.default_timeout, now=self.clock(),
            incarnation=incarnation_of(message)))
        return message.changed(callback_notice=message.attempt_count,
                               callback_notice_id=notice.key.message_id), notice

    async def _orphan(self, notice: Message) -> bool:
        """Drop a notice whose outcome was never recorded (domain/callback.is_orphan): it
        ends CANCELLED, without an attempt, and its entry goes. A message retention has
        deleted is not one of those: its notice goes on."""
        parent_key, _ = parent_of(notice.key)
        parent = await self.store.get(parent_key, with_body=False)
        if parent is not None and not tells_of(notice, parent):
            # a later message under the id: this notice's own was deleted (helper-51)
            parent = None
        if not is_orphan(notice.key, parent):
            return False
        log.warning("dropped the notice of an outcome that was never recorded",
                    extra=message_context(notice))
        with contextlib.suppress(StaleWrite, InvalidState):
            await self.store.update(notice.cancel(self.clock()))
        return True

    async def _release_held_notice(self, message: Message) -> None:
        """A final message's outcome notice, stored before the outcome and let go after it:
        if what let it go never ran (a crash, a failed step between), let it go now. With an
        outbox nothing else would (no index of unqueued items); embedded, reconcile() would
        too, later. Called where a final message is read again: its entry's redelivery, the
        dead-letter sweep."""
        key = latest_notice_key(message)
        if key is None:
            return
        notice = await self.store.get(key, with_body=False)
        if notice is not None and notice.status is Status.QUEUED and not notice.queued:
            log.warning("releasing an outcome notice whose release did not run",
                        extra=message_context(notice))
            await self._send_notice(notice)

    async def _send_notice(self, notice: Message | None) -> None:
        """Queue a stored notice (a failed enqueue is the reconciler's, as for any message)."""
        if notice is not None and notice.status is Status.QUEUED and not notice.queued:
            log.info("outcome notice", extra=message_context(notice))
            await self._enqueue(notice)

    async def _record(self, message: Message, claim: Claim,
                      shared: QueueInStore | None) -> Message:
        """Write an attempt's outcome, through a store that is briefly unavailable: the
        partner has answered, and losing that costs a whole lease and a repeated request.
        With `shared` (the store, when its queue shares it), the entry is settled in the
        same write."""
        def write() -> Awaitable[Message]:
            if shared is not None:
                return shared.update_settled(message, claim)
            return self.store.update(message)

        return await self._through_faults(write, message)

    async def _through_faults(self, write: Callable[[], Awaitable[T]], message: Message) -> T:
        """`write`, tried again over RECORD_RETRY_DELAYS while the store is unavailable."""
        for delay in RECORD_RETRY_DELAYS:
            try:
                return await write()
            except StoreUnavailable:
                log.warning("recording an attempt failed; trying again",
                            extra={**message_context(message), "retryInSeconds": delay})
                await asyncio.sleep(delay)
        return await write()

    async def _requeue_if_retried(self, key: MessageKey) -> None:
        """A final message retried by hand between this worker's read and its complete():
        the retry's enqueue found the entry this worker held and left it, and complete()
        dropped it. Queue it again (enqueue is idempotent where it can be, and conditional
        writes make an extra SQS entry harmless)."""
        if self._outbox:  # the retry's own write was queued anew by the outbox
            return
        message = await self.store.get(key, with_body=False)
        if message is not None and message.status is Status.QUEUED:
            await self.queue.enqueue(key, message.next_attempt_at or self.clock(),
                                     message.correlation_id, message.destination)
            self.on_scheduled(message.next_attempt_at or self.clock())

    def _not_before(self, message: Message) -> datetime | None:
        """When a claimed entry may be worked on, if it came early.

        A RETRYING message woke before its time (a lost lease, an SQS re-send hop). A
        DELIVERING one is interrupted for sure only where claims are exclusive (the embedded
        queue, whose leases the next start releases); with SQS a duplicate of the entry
        may arrive while another worker's attempt is still running, so wait until that
        attempt would have timed out.
        """
        if message.status in (Status.RETRYING, Status.QUEUED):  # QUEUED: its deliverAt
            return message.next_attempt_at
        if message.status is Status.DELIVERING and not self.queue.exclusive_claims:
            return message.updated_at + timedelta(
                seconds=message.timeout_seconds + IN_FLIGHT_MARGIN_SECONDS)
        return None

    async def _settle(self, claim: Claim, message: Message, outcome: Outcome, *,
                      entry_settled: bool = False) -> None:
        """The claimed entry follows the message's outcome; `entry_settled`: the store
        already did that in the outcome's own write (QueueInStore.update_settled)."""
        if outcome is Outcome.RETRY and message.next_attempt_at is not None:
            if not entry_settled:
                await self.queue.reschedule(claim, message.next_attempt_at)
            self.on_scheduled(message.next_attempt_at)
            return
        if message.status is Status.DELIVERED:
            if not entry_settled:
                await self.queue.complete(claim)
            self.observer.delivered((self.clock() - message.created_at).total_seconds())
        else:
            if not entry_settled:
                await self.queue.dead_letter(claim)
            self.observer.dead_lettered()
            log.warning("dead-lettered", extra={**message_context(message),
                                                "error": message.last_error})
