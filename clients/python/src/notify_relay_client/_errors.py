"""The exceptions of the client: one base, API errors by code family, and no answer at all.

Each class's docstring says when it is raised; `code`, `detail` and `correlation_id` come
from the server's problem details (RFC 9457), so a log line can be matched to the server's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notify_relay_client._models import Message


class NotifyRelayError(Exception):
    """Anything this client raises on purpose."""


class TransportError(NotifyRelayError):
    """No answer from the server (connection refused or reset, timeout) after all retries.

    The underlying `httpx` exception is the `__cause__`."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field of a request: `field` is a dotted path (`retryPolicy.maxAttempts`)."""

    field: str
    message: str


class ApiError(NotifyRelayError):
    """The server answered with an error status.

    `status` is the HTTP status, `code` the contract's error code (`HTTP_<status>` when the
    answer was not notify-relay's problem details, e.g. from a proxy), `detail` the reason,
    `correlation_id` the request's `X-Correlation-Id`, `errors` the invalid fields (400)."""

    def __init__(self, status: int, code: str, detail: str, *,
                 correlation_id: str | None = None,
                 errors: tuple[FieldError, ...] = (), retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.correlation_id = correlation_id
        self.errors = errors
        self.retry_after = retry_after


class ValidationError(ApiError):
    """The request was refused as sent (400 `VALIDATION_ERROR`, 413, 415, 431, and 422
    `TARGET_NOT_ALLOWED`): sending it again will not help; `errors` names the fields."""


class AuthenticationError(ApiError):
    """401 `UNAUTHENTICATED`: no valid API key."""


class ForbiddenError(ApiError):
    """403 `FORBIDDEN`: the `senderId` is not the key's sender, the host is refused, or
    (on AWS) the SigV4 signature or the IAM principal was refused."""


class NotFoundError(ApiError):
    """404 `NOT_FOUND`: no such message or destination for this sender."""


class ConflictError(ApiError):
    """409: `IDEMPOTENCY_CONFLICT` or `INVALID_STATE`."""


class IdempotencyConflictError(ConflictError):
    """409 `IDEMPOTENCY_CONFLICT`: this `messageId` was accepted with other content."""


class InvalidStateError(ConflictError):
    """409 `INVALID_STATE`: retry of a message that is not FAILED or CANCELLED, or cancel
    of one that is DELIVERING or final."""


class RateLimitedError(ApiError):
    """429 `RATE_LIMITED` after all retries, or with a `Retry-After` longer than the client
    waits (`retry_after`, seconds)."""


class ServerError(ApiError):
    """5xx after all retries: the server could not store or queue; submitting again with
    the same `messageId` is safe."""


class WaitTimeoutError(NotifyRelayError, TimeoutError):
    """`wait_for` ran out of time; `message` is the last state seen."""

    def __init__(self, message: Message, timeout: float) -> None:
        super().__init__(f"message {message.message_id} still {message.status.value} "
                         f"after {timeout:g} s")
        self.message = message
        self.timeout = timeout


class WebhookVerificationError(NotifyRelayError):
    """A received webhook's signature headers are missing, stale or do not match."""


_BY_CODE: Mapping[str, type[ApiError]] = {
    "VALIDATION_ERROR": ValidationError,
    "PAYLOAD_TOO_LARGE": ValidationError,
    "HEADERS_TOO_LARGE": ValidationError,
    "UNSUPPORTED_MEDIA_TYPE": ValidationError,
    "TARGET_NOT_ALLOWED": ValidationError,
    "UNAUTHENTICATED": AuthenticationError,
    "FORBIDDEN": ForbiddenError,
    "NOT_FOUND": NotFoundError,
    "IDEMPOTENCY_CONFLICT": IdempotencyConflictError,
    "INVALID_STATE": InvalidStateError,
    "RATE_LIMITED": RateLimitedError,
    "SYSTEM_ERROR": ServerError,
}
_BY_STATUS: Mapping[int, type[ApiError]] = {
    400: ValidationError, 401: AuthenticationError, 403: ForbiddenError, 404: NotFoundError,
    409: ConflictError, 413: ValidationError, 415: ValidationError, 422: ValidationError,
    429: RateLimitedError, 431: ValidationError,
}


def error_class(status: int, code: str) -> type[ApiError]:
    """The exception class for an error answer: by its code, else by its status."""
    known = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if known is not None:
        return known
    return ServerError if status >= 500 else ApiError


def api_error(status: int, problem: Mapping[str, Any], *, correlation_id: str | None = None,
              retry_after: float | None = None) -> ApiError:
    """The typed exception for problem details (or a batch item's problem fields)."""
    code = problem.get("code")
    code = code if isinstance(code, str) else f"HTTP_{status}"
    detail = problem.get("detail") or problem.get("title") or problem.get("message") or ""
    raw_errors = problem.get("errors")
    errors = tuple(FieldError(str(e.get("field", "")), str(e.get("message", "")))
                   for e in raw_errors if isinstance(e, Mapping)
                   ) if isinstance(raw_errors, list) else ()
    cid = problem.get("correlationId")
    return error_class(status, code)(
        status, code, str(detail), correlation_id=cid if isinstance(cid, str) else correlation_id,
        errors=errors, retry_after=retry_after)
