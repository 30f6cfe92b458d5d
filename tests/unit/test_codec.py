"""The message document: orjson writes the datetimes, enums and tuples message_to_doc leaves
to it as the stores always stored them (isoformat(), values, lists), and it reads back as
the same message."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import orjson

from notify_relay.adapters.codec import message_from_doc, message_to_doc
from notify_relay.domain.message import Message
from notify_relay.domain.response import PartnerResponse
from notify_relay.domain.retry import AttemptResult, Decision, ErrorKind, Outcome
from tests.factories import make_message

ZONES = [UTC, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)),
         timezone(timedelta(hours=-3))]


def _time(rng: random.Random) -> datetime:
    return datetime(2026, 1, 1, tzinfo=rng.choice(ZONES)) + timedelta(
        seconds=rng.randrange(10**8),
        microseconds=rng.choice([0, 1, 1000, 999999, rng.randrange(10**6)]))


def _as_stored_before(value: Any) -> Any:
    """The document as message_to_doc built it before it left these to orjson."""
    if isinstance(value, dict):
        return {k: _as_stored_before(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_stored_before(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _messages(count: int) -> list[Message]:
    rng = random.Random(7)
    messages = []
    for i in range(count):
        message = make_message(f"m-{i}", body=rng.choice([None, b"{}", b"x"]), now=_time(rng))
        changes: dict[str, object] = {}
        if rng.random() < 0.5:
            changes["event_timestamp"] = _time(rng)
        if rng.random() < 0.5:
            changes["deliver_at"] = _time(rng)
        if rng.random() < 0.3:
            changes["callback_url"] = "https://cb.example/x"
            changes["callback_notice"] = rng.randrange(3)
            changes["callback_notice_id"] = rng.choice([None, "n-1"])
        message = message.changed(**changes)
        for _ in range(rng.randrange(4)):
            message = message.start_attempt(_time(rng))
            code = rng.choice([None, 200, 429, 503])
            result = AttemptResult(
                status_code=code, error_kind=None if code else ErrorKind.TIMEOUT,
                error=None if code else "timeout after 5 s",
                response=PartnerResponse.capture([("Content-Type", "text/plain"),
                                                  ("Retry-After", "5")], b"ok\xff", False)
                if code else None)
            decision = (Decision(Outcome.RETRY, _time(rng)) if code != 200
                        else Decision(Outcome.SUCCESS))
            message = message.finish_attempt(result, decision, started_at=_time(rng),
                                             duration_ms=rng.randrange(5000), now=_time(rng))
            if message.status.is_final:
                break
        messages.append(message.with_version(rng.randrange(1, 9)))
    return messages


def _read_back(message: Message, stored: bytes) -> Message:
    return message_from_doc(
        orjson.loads(stored), key=message.key, status=message.status.value,
        fingerprint=message.fingerprint, created_at=message.created_at.isoformat(),
        updated_at=message.updated_at.isoformat(), queued=message.queued,
        version=message.version, body=message.content.body)


def test_documents_are_the_bytes_they_were_and_read_back_as_the_message() -> None:
    messages = _messages(300)
    assert any(m.attempts and m.attempts[-1].response for m in messages)
    assert any(m.callback_notice_id for m in messages)
    for message in messages:
        doc = message_to_doc(message)
        stored = orjson.dumps(doc)
        assert stored == orjson.dumps(_as_stored_before(doc)), message
        assert _read_back(message, stored) == message
