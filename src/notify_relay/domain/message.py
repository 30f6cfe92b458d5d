"""A message, its attempts, and the moves the status machine allows on it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum

from notify_relay.domain.destination import DestinationKey, default_destination
from notify_relay.domain.errors import InvalidState
from notify_relay.domain.response import PartnerResponse
from notify_relay.domain.retry import AttemptResult, Decision, ErrorKind, Outcome, RetryPolicy
from notify_relay.domain.status import Status, check_transition


class BodyKind(StrEnum):
    NONE = "NONE"
    TEXT = "TEXT"
    JSON = "JSON"


@dataclass(frozen=True, slots=True, order=True)
class MessageKey:
    sender_id: str
    message_id: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.sender_id}:{self.message_id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: Outcome
    response: PartnerResponse | None = None


@dataclass(frozen=True, slots=True)
class CallbackState:
    """What a message's view shows of its latest outcome notice (domain/callback.py)."""

    status: Status
    attempt_count: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Content:
    """What the partner receives; identical content makes a resubmission a duplicate."""

    target_url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    body_kind: BodyKind

    def fingerprint(self) -> str:
        """Hash of the content, header names folded to lower case and sorted."""
        digest = hashlib.sha256()
        head = {
            "url": self.target_url,
            "method": self.method,
            "headers": sorted((k.lower(), v) for k, v in self.headers),
            "kind": self.body_kind.value,
        }
        digest.update(json.dumps(head, separators=(",", ":")).encode())
        digest.update(b"\0")
        digest.update(self.body or b"")
        return "sha256:" + digest.hexdigest()

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)


# the partner's answer is kept on the latest attempts only: up to ~4 KB each, it would
# otherwise grow a DynamoDB item towards its 400 KB limit over a long retry history
RESPONSES_KEPT = 10
INTERRUPTED_ERROR = "attempt interrupted: the worker stopped before it recorded a result"
# an attempt the server gave up on when it stopped cleanly (its grace over): not a crash,
# so not counted toward POISON_INTERRUPTIONS (three deploys made a healthy message FAILED)
STOPPED_ERROR = ("attempt cut short: the server stopped (its shutdown grace ran out, or a "
                 "second stop signal ended it) before the partner answered")
# a message whose attempts keep ending with the worker's death is taken for the cause
POISON_INTERRUPTIONS = 3
POISON_ERROR = (f"attempt interrupted {POISON_INTERRUPTIONS} times in a row: the message is "
                "taken for the cause and not tried again")


@dataclass(frozen=True)
class Message:
    """No __slots__, unlike its parts: `changed` copies the instance __dict__ (see there)."""

    key: MessageKey
    content: Content
    fingerprint: str
    correlation_id: str
    policy: RetryPolicy
    timeout_seconds: float
    created_at: datetime
    updated_at: datetime
    event_timestamp: datetime | None = None
    destination: str = ""
    status: Status = Status.QUEUED
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    attempt_count: int = 0
    round_start: int = 0
    uncounted: int = 0  # interrupted attempts of this round: made, but not spent
    last_status_code: int | None = None
    last_error: str | None = None
    attempts: tuple[Attempt, ...] = field(default=())
    queued: bool = False
    version: int = 0
    callback_url: str | None = None  # told the outcome (contract v1.1)
    deliver_at: datetime | None = None  # no attempt before it (contract v1.1)
    callback_notice: int | None = None  # attempt count of the latest outcome told
    # its notice's message id when not the usual one (domain/callback.latest_notice_key)
    callback_notice_id: str | None = None
    # read-time only, never stored: the latest notice's state, for the view
    callback: CallbackState | None = None

    @classmethod
    def new(
        cls,
        key: MessageKey,
        content: Content,
        *,
        correlation_id: str,
        policy: RetryPolicy,
        timeout_seconds: float,
        now: datetime,
        event_timestamp: datetime | None = None,
        destination: str | None = None,
        deliver_at: datetime | None = None,
        callback_url: str | None = None,
    ) -> Message:
        """`deliver_at`: no attempt before it (a past time means now)."""
        return cls(
            key=key,
            content=content,
            fingerprint=content.fingerprint(),
            correlation_id=correlation_id,
            policy=policy,
            timeout_seconds=timeout_seconds,
            created_at=now,
            updated_at=now,
            event_timestamp=event_timestamp,
            destination=destination or default_destination(content.target_url),
            next_attempt_at=max(now, deliver_at) if deliver_at is not None else now,
            callback_url=callback_url,
            deliver_at=deliver_at,
        )

    @property
    def destination_key(self) -> DestinationKey:
        return DestinationKey(self.key.sender_id, self.destination)

    @property
    def attempt_budget(self) -> int:
        """Total attempts allowed so far: each manual retry adds policy.max_attempts, and an
        attempt cut short by a crash or a stop is not spent."""
        return self.round_start + self.uncounted + self.policy.max_attempts

    @property
    def attempt_in_round(self) -> int:
        """Number of the next attempt since the message was (re)queued, 1-based, counting
        only the attempts spent."""
        return self.attempt_count - self.round_start - self.uncounted + 1

    def _interruptions_in_a_row(self) -> int:
        count = 0
        for attempt in reversed(self.attempts):
            if attempt.error != INTERRUPTED_ERROR:
                break
            count += 1
        return count

    def changed(self, **changes: object) -> Message:
        """`dataclasses.replace` for 0.8 us instead of 5.5: a delivery makes about six
        copies, which were ~10 % of the delivering process's CPU. Same result, since no
        field has a default factory or post-init to run; unknown names still raise, but
        mypy no longer checks the names and types given (nor would a cached_property on
        Message be dropped: add none)."""
        if not changes.keys() <= _FIELD_NAMES:
            raise TypeError(f"Message has no field {sorted(changes.keys() - _FIELD_NAMES)}")
        copy = object.__new__(type(self))
        state = copy.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return copy

    def _move(self, status: Status, now: datetime, **changes: object) -> Message:
        check_transition(self.status, status)
        return self.changed(status=status, updated_at=now, **changes)

    def with_version(self, version: int) -> Message:
        return self.changed(version=version)

    def mark_queued(self) -> Message:
        return self.changed(queued=True)

    def start_attempt(self, now: datetime) -> Message:
        """Move to DELIVERING; a DELIVERING message was cut short, so record that first.

        The cut-short attempt spends nothing of the budget (the partner may never have
        seen it), unless it is the third in a row: then the message is poison, FAILED.
        It is recorded as started when it was: the move to DELIVERING (a moment before its
        request went out), the last change of a DELIVERING message; its length is not known: 0.
        """
        message = self
        if message.status is Status.DELIVERING:
            started = message.updated_at
            if message._interruptions_in_a_row() + 1 >= POISON_INTERRUPTIONS:
                poison = AttemptResult(error_kind=ErrorKind.INTERRUPTED, error=POISON_ERROR)
                return message.finish_attempt(poison, Decision(Outcome.GIVE_UP),
                                              started_at=started, duration_ms=0, now=now)
            interrupted = AttemptResult(error_kind=ErrorKind.INTERRUPTED, error=INTERRUPTED_ERROR)
            message = message.finish_attempt(
                interrupted, Decision(Outcome.RETRY, now), started_at=started, duration_ms=0,
                now=now).changed(uncounted=message.uncounted + 1)
        return message._move(Status.DELIVERING, now, next_attempt_at=None, queued=True)

    def cut_short(self, *, started_at: datetime, duration_ms: int, now: datetime) -> Message:
        """The attempt in flight, abandoned by a clean stop: recorded as it went, spending
        nothing of the budget, due again at once (the next start sends it)."""
        stopped = AttemptResult(error_kind=ErrorKind.INTERRUPTED, error=STOPPED_ERROR)
        return self.finish_attempt(
            stopped, Decision(Outcome.RETRY, now), started_at=started_at,
            duration_ms=duration_ms, now=now).changed(uncounted=self.uncounted + 1)

    def finish_attempt(
        self,
        result: AttemptResult,
        decision: Decision,
        *,
        started_at: datetime,
        duration_ms: int,
        now: datetime,
    ) -> Message:
        number = self.attempt_count + 1
        attempt = Attempt(number, started_at, duration_ms, result.status_code,
                          result.description, decision.outcome, result.response)
        attempts = (*self.attempts, attempt)
        if len(attempts) > RESPONSES_KEPT:  # older answers go: the item stays bounded
            cut = len(attempts) - RESPONSES_KEPT
            attempts = tuple(replace(a, response=None) if i < cut and a.response else a
                             for i, a in enumerate(attempts))
        common: dict[str, object] = {
            "attempt_count": number,
            "attempts": attempts,
            "last_status_code": result.status_code,
            "last_error": result.description,
        }
        if decision.outcome is Outcome.SUCCESS:
            return self._move(Status.DELIVERED, now, delivered_at=now, next_attempt_at=None,
                              **common)
        if decision.outcome is Outcome.RETRY:
            return self._move(Status.RETRYING, now, next_attempt_at=decision.retry_at, **common)
        return self._move(Status.FAILED, now, next_attempt_at=None, **common)

    def retry_by_hand(self, now: datetime) -> Message:
        """A fresh budget of policy.max_attempts for a FAILED or CANCELLED message."""
        if self.status not in (Status.FAILED, Status.CANCELLED):
            raise InvalidState("only a FAILED or CANCELLED message can be retried; "
                               f"this one is {self.status}")
        return self._move(
            Status.QUEUED,
            now,
            # a message cancelled before its deliverAt still waits for it
            next_attempt_at=max(now, self.deliver_at) if self.deliver_at else now,
            round_start=self.attempt_count,
            uncounted=0,
            queued=False,
        )

    def cancel(self, now: datetime) -> Message:
        """Stop a waiting message; an attempt in flight may already have reached the
        partner, and a final message has nothing left to stop."""
        if self.status not in (Status.QUEUED, Status.RETRYING):
            raise InvalidState("only a QUEUED or RETRYING message can be cancelled; "
                               f"this one is {self.status}")
        return self._move(Status.CANCELLED, now, next_attempt_at=None)


_FIELD_NAMES = frozenset(f.name for f in fields(Message))
