"""Builders of domain objects for tests."""

from __future__ import annotations

from datetime import UTC, datetime

from notify_relay.domain.message import BodyKind, Content, Message, MessageKey
from notify_relay.domain.retry import RetryPolicy

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def make_message(
    message_id: str = "m-1",
    sender_id: str = "sender-a",
    *,
    body: bytes | None = b'{"n":1}',
    url: str = "https://partner.example/hook",
    now: datetime = NOW,
    max_attempts: int = 3,
) -> Message:
    content = Content(url, "POST", (("X-Trace", "t"), ("Authorization", "Bearer k")), body,
                      BodyKind.JSON if body is not None else BodyKind.NONE)
    return Message.new(MessageKey(sender_id, message_id), content, correlation_id="corr-1",
                       policy=RetryPolicy(max_attempts, 1.0, 60.0), timeout_seconds=5.0, now=now)
