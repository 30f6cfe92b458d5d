"""One error tree for the product; each class carries the contract's code and HTTP status.

The docstring of each class is its default message, as in procrastinate's exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class NotifyRelayError(Exception):
    """notify-relay failed."""

    code = "SYSTEM_ERROR"
    status = 500

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class ValidationFailed(NotifyRelayError):
    """The request is not valid."""

    code = "VALIDATION_ERROR"
    status = 400

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        detail = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        super().__init__(detail or None)


class Unauthenticated(NotifyRelayError):
    """A valid API key is required."""

    code = "UNAUTHENTICATED"
    status = 401


class Forbidden(NotifyRelayError):
    """senderId is not the sender of this API key."""

    code = "FORBIDDEN"
    status = 403


class NotFound(NotifyRelayError):
    """No such message."""

    code = "NOT_FOUND"
    status = 404


class IdempotencyConflict(NotifyRelayError):
    """This messageId was already accepted with different content."""

    code = "IDEMPOTENCY_CONFLICT"
    status = 409


class InvalidState(NotifyRelayError):
    """The message is not in a state that allows this."""

    code = "INVALID_STATE"
    status = 409


class InvalidTransition(NotifyRelayError):
    """A status change the status machine does not allow (a bug, not a caller error)."""


class PayloadTooLarge(NotifyRelayError):
    """The request body is over the limit."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413


class UnsupportedMediaType(NotifyRelayError):
    """The request body must be JSON (Content-Type: application/json)."""

    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class TargetNotAllowed(NotifyRelayError):
    """The target address is refused by the network policy."""

    code = "TARGET_NOT_ALLOWED"
    status = 422


class RateLimited(NotifyRelayError):
    """Too many submissions from this sender; retry later."""

    code = "RATE_LIMITED"
    status = 429

    def __init__(self, retry_after_seconds: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__()


class StoreUnavailable(NotifyRelayError):
    """The store cannot take writes now (disk full, read-only, locked); retry shortly with
    the same messageId."""

    code = "SYSTEM_ERROR"
    status = 503
    retry_after_seconds = 1


class CorruptRecord(NotifyRelayError):
    """A stored record cannot be read."""


class StaleWrite(NotifyRelayError):
    """The message changed since it was read; the write was refused."""


class InvalidCursor(ValidationFailed, ValueError):
    """A list cursor that this server did not issue: a 400 for the `cursor` field."""

    def __init__(self) -> None:
        super().__init__([FieldError("cursor", "cursor is not one this server issued")])
