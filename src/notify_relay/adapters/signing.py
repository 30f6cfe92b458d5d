"""Standard Webhooks signatures, by the `standardwebhooks` library, per sender."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from standardwebhooks import Webhook

from notify_relay.domain.message import Message


class StandardWebhooksSigner:
    """Signs the requests of senders that have a secret; the others go unsigned."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._hooks = {sender: Webhook(secret) for sender, secret in secrets.items()}

    def add(self, secrets: Mapping[str, str]) -> None:
        """Signs for these senders too; a sender's secret given again replaces its own."""
        self._hooks.update({sender: Webhook(secret) for sender, secret in secrets.items()})

    def headers(self, message: Message, now: datetime) -> Sequence[tuple[str, str]]:
        hook = self._hooks.get(message.key.sender_id)
        if hook is None:
            return ()
        webhook_id = message.key.idempotency_key  # the same on every attempt, as the key
        payload = (message.content.body or b"").decode()
        return (("webhook-id", webhook_id),
                ("webhook-timestamp", str(int(now.timestamp()))),
                ("webhook-signature", hook.sign(webhook_id, now, payload)))
