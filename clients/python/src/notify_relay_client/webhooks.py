"""The receiving side: verify the Standard Webhooks signature of a request notify-relay
delivered (to a partner, or to a `callbackUrl`), by the `standardwebhooks` library.

    verifier = WebhookVerifier("whsec_...")
    event = verifier.verify(request_body_bytes, request.headers)   # raises if not genuine
    data = event.json()
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import standardwebhooks

from notify_relay_client._errors import WebhookVerificationError
from notify_relay_client._models import CallbackEvent


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A request whose signature matched: its `webhook-id` (the same on every attempt of
    a message), signing time, `Idempotency-Key` and body."""

    id: str
    timestamp: datetime
    body: bytes
    idempotency_key: str | None = None
    correlation_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def callback(self) -> CallbackEvent:
        """The body as the outcome notice sent to a `callbackUrl`."""
        return CallbackEvent.from_json(self.json())


class WebhookVerifier:
    """Verifies against one secret (`whsec_<base64>`, as given to the server's
    `--signing-secrets`) or several (during a rotation: any may match). Signatures more than
    five minutes old or ahead are refused (the library's tolerance), against replays."""

    def __init__(self, secret: str | bytes, *more_secrets: str | bytes) -> None:
        try:
            self._webhooks = [standardwebhooks.Webhook(s) for s in (secret, *more_secrets)]
        except Exception as exc:
            raise ValueError(f"not a webhook signing secret: {exc}") from None

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> VerifiedWebhook:
        """The verified request, or WebhookVerificationError. `body` must be the bytes as
        received (before any JSON parsing); `headers` any mapping, any case."""
        lower = {str(k).lower(): str(v) for k, v in headers.items()}
        raw = body.encode() if isinstance(body, str) else bytes(body)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise WebhookVerificationError("the body is not UTF-8") from None
        reason = "no secret"
        for webhook in self._webhooks:
            try:
                webhook.verify(text, lower, json_parse=False)
            except standardwebhooks.WebhookVerificationError as exc:
                reason = str(exc)
                continue
            except ValueError as exc:  # a malformed signature header
                reason = f"malformed signature headers: {exc}"
                continue
            return VerifiedWebhook(
                id=lower["webhook-id"],
                timestamp=datetime.fromtimestamp(float(lower["webhook-timestamp"]), UTC),
                body=raw, idempotency_key=lower.get("idempotency-key"),
                correlation_id=lower.get("x-correlation-id"))
        raise WebhookVerificationError(reason)


def verify_webhook(secret: str | bytes, body: bytes | str,
                   headers: Mapping[str, str]) -> VerifiedWebhook:
    """`WebhookVerifier(secret).verify(body, headers)`."""
    return WebhookVerifier(secret).verify(body, headers)


__all__ = ["VerifiedWebhook", "WebhookVerificationError", "WebhookVerifier", "verify_webhook"]
