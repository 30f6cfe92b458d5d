"""Typed views of the API's JSON: frozen dataclasses, each with `from_json`, and the
`Submission` a caller builds.

Field names are the JSON names in snake_case (`messageId` -> `message_id`); times are
aware `datetime`s in UTC. Fields the server adds later are ignored, so an older client keeps
working; tests/client/test_models_openapi.py holds these classes to the server's
/openapi.json. Dataclasses rather than pydantic keep the client's dependencies to httpx.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar

from notify_relay_client._errors import ApiError, FieldError, api_error

T = TypeVar("T")
Json = Mapping[str, Any]


class MessageStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    DELIVERING = "DELIVERING"
    RETRYING = "RETRYING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# where a message stays unless someone retries it by hand
FINAL_STATUSES: frozenset[MessageStatus] = frozenset(
    {MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.CANCELLED})


class AttemptOutcome(enum.StrEnum):
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    GIVE_UP = "GIVE_UP"


class BreakerState(enum.StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 string as an aware datetime; None stays None."""
    if value is None:
        return None
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _time(value: object) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError("a time is required")
    return parsed


def format_time(value: datetime | str) -> str:
    """RFC 3339 UTC with milliseconds (`2026-11-28T23:59:59.123Z`); a string is kept."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("a naive datetime is ambiguous: give it a timezone (UTC)")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A message's delivery retries (the server may cap them); None leaves the default."""

    max_attempts: int | None = None
    initial_delay_seconds: float | None = None
    max_delay_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        values = {"maxAttempts": self.max_attempts,
                  "initialDelaySeconds": self.initial_delay_seconds,
                  "maxDelaySeconds": self.max_delay_seconds}
        return {k: v for k, v in values.items() if v is not None}


class SubmitOptions(TypedDict, total=False):
    """The keyword arguments of `submit`: the fields of `Submission` after `target_url`."""

    body: Any
    method: str
    headers: Mapping[str, str] | None
    message_id: str | None
    destination: str | None
    retry_policy: RetryPolicy | None
    timeout_seconds: float | None
    deliver_at: datetime | str | None
    callback_url: str | None
    timestamp: datetime | str | None


@dataclass(frozen=True, slots=True)
class Submission:
    """One notification to submit: what `submit` takes as arguments, and `submit_batch`
    as a list. Without `message_id` the client makes one (a UUID) before the first try,
    so that its retries cannot create a second message."""

    target_url: str
    body: Any = None
    method: str = "POST"
    headers: Mapping[str, str] | None = None
    message_id: str | None = None
    destination: str | None = None
    retry_policy: RetryPolicy | None = None
    timeout_seconds: float | None = None
    deliver_at: datetime | str | None = None
    callback_url: str | None = None
    timestamp: datetime | str | None = None

    def with_id(self) -> Submission:
        """This submission with a `message_id`: its own, or a new UUID."""
        return self if self.message_id else replace(self, message_id=str(uuid.uuid4()))

    def to_json(self, sender_id: str | None = None) -> dict[str, Any]:
        if not self.message_id:
            raise ValueError("call with_id() first: a submission needs its messageId")
        data: dict[str, Any] = {"messageId": self.message_id, "targetUrl": self.target_url,
                                "method": self.method}
        optional: dict[str, Any] = {
            "senderId": sender_id,
            "headers": dict(self.headers) if self.headers is not None else None,
            "body": self.body,
            "destination": self.destination,
            "retryPolicy": self.retry_policy.to_json() if self.retry_policy else None,
            "timeoutSeconds": self.timeout_seconds,
            "deliverAt": format_time(self.deliver_at) if self.deliver_at else None,
            "callbackUrl": self.callback_url,
            "timestamp": format_time(self.timestamp) if self.timestamp else None,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        return data


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The answer to a submission: 202 (`duplicate` False) or 200 (`duplicate` True: the
    same message was already accepted, possibly by an earlier try of this very call)."""

    message_id: str
    sender_id: str
    status: MessageStatus
    stored: bool
    queued: bool
    duplicate: bool
    correlation_id: str

    @classmethod
    def from_json(cls, data: Json) -> SubmitResult:
        return cls(message_id=str(data["messageId"]), sender_id=str(data["senderId"]),
                   status=MessageStatus(data["status"]), stored=bool(data["stored"]),
                   queued=bool(data["queued"]), duplicate=bool(data["duplicate"]),
                   correlation_id=str(data["correlationId"]))


@dataclass(frozen=True, slots=True)
class BatchItemError:
    """A batch item the server refused: its problem fields, and its `message_id`."""

    http_status: int
    code: str
    detail: str
    message_id: str | None
    errors: tuple[FieldError, ...] = ()

    @classmethod
    def from_json(cls, data: Json) -> BatchItemError:
        error = api_error(int(data["httpStatus"]), data)
        return cls(http_status=error.status, code=error.code, detail=error.detail,
                   message_id=_opt_str(data.get("messageId")), errors=error.errors)

    def to_exception(self) -> ApiError:
        """The exception `submit` would have raised for this item."""
        return api_error(self.http_status, {
            "code": self.code, "detail": self.detail,
            "errors": [{"field": e.field, "message": e.message} for e in self.errors]})


def batch_item(data: Json) -> SubmitResult | BatchItemError:
    status = int(data.get("httpStatus", 0))
    return SubmitResult.from_json(data) if status in (200, 202) else BatchItemError.from_json(data)


@dataclass(frozen=True, slots=True)
class PartnerResponse:
    """The partner's answer to an attempt: some of its headers, the start of its body."""

    headers: Mapping[str, str]
    body: str
    body_truncated: bool

    @classmethod
    def from_json(cls, data: Json) -> PartnerResponse:
        return cls(headers=dict(data["headers"]), body=str(data["body"]),
                   body_truncated=bool(data["bodyTruncated"]))


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    outcome: AttemptOutcome
    response: PartnerResponse | None = None

    @classmethod
    def from_json(cls, data: Json) -> Attempt:
        response = data.get("response")
        return cls(number=int(data["number"]), started_at=_time(data["startedAt"]),
                   duration_ms=int(data["durationMs"]),
                   status_code=_opt_int(data.get("statusCode")),
                   error=_opt_str(data.get("error")), outcome=AttemptOutcome(data["outcome"]),
                   response=PartnerResponse.from_json(response) if response else None)


@dataclass(frozen=True, slots=True)
class CallbackState:
    """Where the outcome notice to a message's `callbackUrl` stands (contract v1.1)."""

    status: MessageStatus
    attempt_count: int
    last_error: str | None

    @classmethod
    def from_json(cls, data: Json) -> CallbackState:
        return cls(status=MessageStatus(data["status"]), attempt_count=int(data["attemptCount"]),
                   last_error=_opt_str(data.get("lastError")))


@dataclass(frozen=True, slots=True)
class Message:
    """A message as stored, with its full attempt history (oldest first)."""

    message_id: str
    sender_id: str
    status: MessageStatus
    target_url: str
    method: str
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    attempt_count: int
    max_attempts: int
    headers: Mapping[str, str] = field(default_factory=dict)
    destination: str | None = None
    timestamp: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    attempts: tuple[Attempt, ...] = ()
    callback_url: str | None = None
    callback: CallbackState | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, data: Json) -> Message:
        callback = data.get("callback")
        return cls(
            message_id=str(data["messageId"]), sender_id=str(data["senderId"]),
            status=MessageStatus(data["status"]), target_url=str(data["targetUrl"]),
            method=str(data["method"]), correlation_id=str(data["correlationId"]),
            created_at=_time(data["createdAt"]), updated_at=_time(data["updatedAt"]),
            attempt_count=int(data["attemptCount"]), max_attempts=int(data["maxAttempts"]),
            headers=dict(data.get("headers") or {}),
            destination=_opt_str(data.get("destination")),
            timestamp=parse_time(data.get("timestamp")),
            next_attempt_at=parse_time(data.get("nextAttemptAt")),
            delivered_at=parse_time(data.get("deliveredAt")),
            last_status_code=_opt_int(data.get("lastStatusCode")),
            last_error=_opt_str(data.get("lastError")),
            attempts=tuple(Attempt.from_json(a) for a in data.get("attempts") or ()),
            callback_url=_opt_str(data.get("callbackUrl")),
            callback=CallbackState.from_json(callback) if callback else None,
        )


@dataclass(frozen=True, slots=True)
class Destination:
    """A destination's breaker, limits and backlog (contract v1.1)."""

    destination: str
    state: BreakerState
    paused: bool
    max_concurrency: int
    rate_per_second: float | None
    in_flight: int
    pending: int
    consecutive_failures: int
    current_concurrency: int | None = None
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    held_until: datetime | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Destination:
        rate = data.get("ratePerSecond")
        return cls(
            destination=str(data["destination"]), state=BreakerState(data["state"]),
            paused=bool(data["paused"]), max_concurrency=int(data["maxConcurrency"]),
            rate_per_second=None if rate is None else float(rate),
            in_flight=int(data["inFlight"]), pending=int(data["pending"]),
            consecutive_failures=int(data["consecutiveFailures"]),
            current_concurrency=_opt_int(data.get("currentConcurrency")),
            opened_at=parse_time(data.get("openedAt")),
            next_probe_at=parse_time(data.get("nextProbeAt")),
            held_until=parse_time(data.get("heldUntil")),
            last_attempt_at=parse_time(data.get("lastAttemptAt")),
            last_success_at=parse_time(data.get("lastSuccessAt")),
            last_error=_opt_str(data.get("lastError")),
        )


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: int
    more: bool

    @classmethod
    def from_json(cls, data: Json) -> ReplayResult:
        return cls(replayed=int(data["replayed"]), more=bool(data["more"]))


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """The body the server POSTs to a `callbackUrl` when a message reaches DELIVERED or
    FAILED (contract v1.1)."""

    type: str
    message_id: str
    sender_id: str
    status: MessageStatus
    attempt_count: int
    correlation_id: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Json) -> CallbackEvent:
        return cls(type=str(data["type"]), message_id=str(data["messageId"]),
                   sender_id=str(data["senderId"]), status=MessageStatus(data["status"]),
                   attempt_count=int(data["attemptCount"]),
                   correlation_id=_opt_str(data.get("correlationId")),
                   last_status_code=_opt_int(data.get("lastStatusCode")),
                   last_error=_opt_str(data.get("lastError")),
                   delivered_at=parse_time(data.get("deliveredAt")))
