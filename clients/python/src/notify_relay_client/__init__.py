"""Python client of notify-relay: submit notifications safely, sync or async.

    from notify_relay_client import Client
    with Client("http://127.0.0.1:8080", api_key="...") as relay:
        relay.submit("https://partner.example/hook", body={"order": 42})
"""

from notify_relay_client._async import AsyncClient
from notify_relay_client._base import UNSET, Retries, __version__
from notify_relay_client._errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    FieldError,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidStateError,
    NotFoundError,
    NotifyRelayError,
    RateLimitedError,
    ServerError,
    TransportError,
    ValidationError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from notify_relay_client._models import (
    FINAL_STATUSES,
    Attempt,
    AttemptOutcome,
    BatchItemError,
    BreakerState,
    CallbackEvent,
    CallbackState,
    Destination,
    Message,
    MessageStatus,
    PartnerResponse,
    ReplayResult,
    RetryPolicy,
    Submission,
    SubmitOptions,
    SubmitResult,
)
from notify_relay_client._sigv4 import SigV4Auth
from notify_relay_client._sync import Client
from notify_relay_client.webhooks import VerifiedWebhook, WebhookVerifier, verify_webhook

__all__ = [
    "FINAL_STATUSES",
    "UNSET",
    "ApiError",
    "AsyncClient",
    "Attempt",
    "AttemptOutcome",
    "AuthenticationError",
    "BatchItemError",
    "BreakerState",
    "CallbackEvent",
    "CallbackState",
    "Client",
    "ConflictError",
    "Destination",
    "FieldError",
    "ForbiddenError",
    "IdempotencyConflictError",
    "InvalidStateError",
    "Message",
    "MessageStatus",
    "NotFoundError",
    "NotifyRelayError",
    "PartnerResponse",
    "RateLimitedError",
    "ReplayResult",
    "Retries",
    "RetryPolicy",
    "ServerError",
    "SigV4Auth",
    "Submission",
    "SubmitOptions",
    "SubmitResult",
    "TransportError",
    "ValidationError",
    "VerifiedWebhook",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "WebhookVerifier",
    "__version__",
    "verify_webhook",
]
