"""What the partner receives: the stored request plus the headers the contract adds."""

from __future__ import annotations

from notify_relay.domain.message import BodyKind, Message

CONTENT_TYPES = {BodyKind.JSON: "application/json", BodyKind.TEXT: "text/plain; charset=utf-8"}
SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})


def outbound_headers(message: Message, user_agent: str, *,
                     signed: bool = False) -> list[tuple[str, str]]:
    """The sender's headers, then defaults for what the sender did not set. `signed`: the
    server adds its own signature, which replaces any the sender gave (two signatures
    would leave the partner to pick one); unsigned, the sender's go as stored (a sender
    may sign its own requests)."""
    content = message.content
    headers = [(k, v) for k, v in content.headers
               if not signed or k.lower() not in SIGNATURE_HEADERS]
    present = {k.lower() for k, _ in headers}
    defaults = [
        ("User-Agent", user_agent),
        ("X-Correlation-Id", message.correlation_id),
        ("Idempotency-Key", message.key.idempotency_key),
    ]
    content_type = CONTENT_TYPES.get(content.body_kind)
    if content_type is not None:
        defaults.append(("Content-Type", content_type))
    headers.extend((k, v) for k, v in defaults if k.lower() not in present)
    return headers
