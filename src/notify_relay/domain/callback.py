"""Outcome callbacks (contract v1.1): the notice a sender gets when a message ends.

A notice is a message of its own, stored, queued and delivered by the same machinery (the
same durability, retries, signing, network policy and destinations), under a key no
sender can choose: message ids cannot contain `~`. So nothing about delivery is written
twice, and a notice's failure is its own, never its message's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from notify_relay.domain.message import BodyKind, CallbackState, Content, Message, MessageKey
from notify_relay.domain.retry import Outcome, RetryPolicy
from notify_relay.domain.status import Status

NOTICE_MARK = "~callback~"  # `~` is outside the message id alphabet: no sender's id has it
NOTICE_TYPES = {Status.DELIVERED: "message.delivered", Status.FAILED: "message.failed"}


def callback_state(notice: Message) -> CallbackState:
    return CallbackState(notice.status, notice.attempt_count, notice.last_error)


def is_notice(key: MessageKey) -> bool:
    return "~" in key.message_id


def notice_key(key: MessageKey, notice: int, incarnation: int | None = None) -> MessageKey:
    """The notice of `key`'s outcome after its attempt number `notice`. `incarnation`
    (the message's creation, in ms) tells apart the notice of a message that reuses the
    id of one retention deleted, while that one's notice is still stored."""
    suffix = "" if incarnation is None else f"~{incarnation}"
    return MessageKey(key.sender_id, f"{key.message_id}{NOTICE_MARK}{notice}{suffix}")


def latest_notice_key(message: Message) -> MessageKey | None:
    """Where the notice of `message`'s latest outcome is stored, if one is due."""
    if message.callback_notice is None:
        return None
    if message.callback_notice_id is not None:
        return MessageKey(message.key.sender_id, message.callback_notice_id)
    return notice_key(message.key, message.callback_notice)


def incarnation_of(message: Message) -> int:
    return int(message.created_at.timestamp() * 1000)


def tells_of(notice: Message, message: Message) -> bool:
    """Whether `notice` is one of `message`'s own, rather than the notice of an earlier
    message under its id that retention deleted while its notice was still stored: a
    notice is made after its message."""
    return notice.created_at >= message.created_at


def parent_of(notice: MessageKey) -> tuple[MessageKey, int]:
    """The message a notice tells of, and the attempt number whose outcome it tells."""
    message_id, _, number = notice.message_id.rpartition(NOTICE_MARK)
    return MessageKey(notice.sender_id, message_id), int(number.partition("~")[0])


def is_orphan(notice: MessageKey, parent: Message | None) -> bool:
    """A notice of an outcome that was never recorded. A notice is stored before its
    message's outcome; if that write then failed (a crash, a lost race between duplicate
    SQS workers), the attempt it tells of was never recorded, or was recorded as cut short
    and tried again: the notice must not go (the next outcome has its own).

    A missing message is no sign of that: a notice is stored after its message, and only
    retention deletes a message, once final, so its outcome was recorded; its notice may
    still be retrying then (a short window, a callback down for a while) and must go on."""
    _, number = parent_of(notice)
    if parent is None:
        return False
    if parent.attempt_count < number:
        return True
    recorded = next((a for a in parent.attempts if a.number == number), None)
    return recorded is not None and recorded.outcome is Outcome.RETRY


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notice_due(message: Message) -> bool:
    """Whether `message` has just ended in a way its sender asked to be told of."""
    return (message.callback_url is not None and message.status in NOTICE_TYPES
            and not is_notice(message.key))


def outcome_notice(message: Message, *, policy: RetryPolicy, timeout_seconds: float,
                   now: datetime, incarnation: int | None = None) -> Message:
    """The notice of `message`'s outcome, as a new message to its callback URL, with the
    contract's Idempotency-Key (the same for every attempt of this notice)."""
    if message.callback_url is None:
        raise ValueError("a message without a callbackUrl has no outcome notice")
    body = {
        "type": NOTICE_TYPES[message.status],
        "messageId": message.key.message_id,
        "senderId": message.key.sender_id,
        "status": message.status.value,
        "attemptCount": message.attempt_count,
        "lastStatusCode": message.last_status_code,
        "lastError": message.last_error,
        "deliveredAt": _rfc3339(message.delivered_at),
        "correlationId": message.correlation_id,
    }
    idempotency = f"{message.key.idempotency_key}:callback:{message.attempt_count}"
    content = Content(message.callback_url, "POST", (("Idempotency-Key", idempotency),),
                      json.dumps(body, separators=(",", ":")).encode(), BodyKind.JSON)
    return Message.new(notice_key(message.key, message.attempt_count, incarnation), content,
                       correlation_id=message.correlation_id, policy=policy,
                       timeout_seconds=timeout_seconds, now=now)
