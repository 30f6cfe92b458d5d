"""Response models: they document the API in /openapi.json; tests hold responses to them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from notify_relay.domain.destination import BreakerState
from notify_relay.domain.retry import Outcome
from notify_relay.domain.status import Status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitResponse(_Strict):
    messageId: str
    senderId: str
    status: Status
    stored: bool
    queued: bool
    duplicate: bool
    correlationId: str


class PartnerResponseOut(_Strict):
    """The partner's answer: its content-type, location and retry-after headers (those
    present) and the first 1,024 bytes of its body as UTF-8 (invalid sequences replaced)."""

    headers: dict[str, str]
    body: str
    bodyTruncated: bool


class AttemptOut(_Strict):
    number: int
    startedAt: str
    durationMs: int
    statusCode: int | None
    error: str | None
    outcome: Outcome
    response: PartnerResponseOut | None


class CallbackOut(_Strict):
    """The latest outcome notice (contract v1.1 Callbacks): its status uses the message
    statuses."""

    status: Status
    attemptCount: int
    lastError: str | None


class MessageOut(_Strict):
    messageId: str
    senderId: str
    status: Status
    targetUrl: str
    method: str
    headers: dict[str, str]
    correlationId: str
    timestamp: str | None
    destination: str
    createdAt: str
    updatedAt: str
    nextAttemptAt: str | None
    deliveredAt: str | None
    attemptCount: int
    maxAttempts: int
    lastStatusCode: int | None
    lastError: str | None
    attempts: list[AttemptOut]
    callbackUrl: str | None = None  # present when the message has one
    callback: CallbackOut | None = None  # present (null before a notice) with callbackUrl


class MessagePage(_Strict):
    items: list[MessageOut]
    nextCursor: str | None


class ReplayOut(_Strict):
    replayed: int
    more: bool


class DestinationOut(_Strict):
    destination: str
    state: BreakerState
    paused: bool
    maxConcurrency: int
    currentConcurrency: int
    ratePerSecond: float | None
    inFlight: int
    pending: int
    consecutiveFailures: int
    openedAt: str | None
    nextProbeAt: str | None
    heldUntil: str | None
    lastAttemptAt: str | None
    lastSuccessAt: str | None
    lastError: str | None


class DestinationPageOut(_Strict):
    items: list[DestinationOut]
    nextCursor: str | None


class FieldErrorOut(_Strict):
    field: str
    message: str


class Problem(_Strict):
    type: str
    title: str
    status: int
    detail: str
    code: str
    correlationId: str
    errors: list[FieldErrorOut] | None = None


class Health(_Strict):
    status: str


class BatchItemOut(BaseModel):
    """One item's answer: POST /v1/messages's answer (with `httpStatus` 202 or 200), or a
    4xx's problem fields (`code`, `detail`, `errors`) and the item's `messageId`."""

    model_config = ConfigDict(extra="forbid")

    httpStatus: int
    messageId: str | None = None
    senderId: str | None = None
    status: Status | None = None
    stored: bool | None = None
    queued: bool | None = None
    duplicate: bool | None = None
    correlationId: str | None = None
    code: str | None = None
    detail: str | None = None
    errors: list[FieldErrorOut] | None = None


class BatchOut(_Strict):
    items: list[BatchItemOut]
