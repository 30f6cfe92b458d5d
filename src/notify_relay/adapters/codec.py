"""Message <-> document, shared by the stores that keep a message as one.

The documents are written with orjson, which writes a datetime as isoformat() does, an
enum as its value and a tuple as a list: message_to_doc leaves those to it rather than
converting them first (2.3 -> 1.3 us a fresh message, 5.4 -> 2.4 with an attempt and its
answer; the delivering process writes two a message)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from notify_relay.domain.destination import (
    Breaker,
    BreakerState,
    Destination,
    DestinationKey,
    DestinationSettings,
    default_destination,
)
from notify_relay.domain.message import Attempt, BodyKind, Content, Message, MessageKey
from notify_relay.domain.response import PartnerResponse
from notify_relay.domain.retry import Outcome, RetryPolicy
from notify_relay.domain.status import Status


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def attempt_to_doc(a: Attempt) -> dict[str, Any]:
    """For orjson (see above)."""
    doc: dict[str, Any] = {"n": a.number, "t": a.started_at, "ms": a.duration_ms,
                           "sc": a.status_code, "e": a.error, "o": a.outcome}
    if a.response is not None:
        doc["r"] = {"h": a.response.headers, "b": a.response.body,
                    "t": a.response.body_truncated}
    return doc


def attempt_from_doc(d: dict[str, Any]) -> Attempt:
    r = d.get("r")  # absent: no response came, or stored before responses were kept
    response = (PartnerResponse(tuple((k, v) for k, v in r["h"]), r["b"], r["t"])
                if r is not None else None)
    return Attempt(d["n"], datetime.fromisoformat(d["t"]), d["ms"], d["sc"], d["e"],
                   Outcome(d["o"]), response)


def message_to_doc(m: Message) -> dict[str, Any]:
    """Everything but the body and the columns a store indexes on; for orjson (see above)."""
    content, policy = m.content, m.policy
    doc: dict[str, Any] = {
        "url": content.target_url,
        "method": content.method,
        "headers": content.headers,
        "bodyKind": content.body_kind,
        "correlationId": m.correlation_id,
        "policy": (policy.max_attempts, policy.initial_delay, policy.max_delay),
        "timeout": m.timeout_seconds,
        "eventTimestamp": m.event_timestamp,
        "destination": m.destination,
        "nextAttemptAt": m.next_attempt_at,
        "deliveredAt": m.delivered_at,
        "attemptCount": m.attempt_count,
        "roundStart": m.round_start,
        "uncounted": m.uncounted,
        "lastStatusCode": m.last_status_code,
        "lastError": m.last_error,
        "attempts": [attempt_to_doc(a) for a in m.attempts],
        "callbackUrl": m.callback_url,
        "callbackNotice": m.callback_notice,
    }
    if m.callback_notice_id:
        doc["callbackNoticeId"] = m.callback_notice_id
    doc["deliverAt"] = m.deliver_at
    return doc


def message_from_doc(
    doc: dict[str, Any],
    *,
    key: MessageKey,
    status: str,
    fingerprint: str,
    created_at: str,
    updated_at: str,
    queued: bool,
    version: int,
    body: bytes | None,
) -> Message:
    max_attempts, initial, max_delay = doc["policy"]
    return Message(
        key=key,
        content=Content(
            target_url=doc["url"],
            method=doc["method"],
            headers=tuple((k, v) for k, v in doc["headers"]),
            body=body,
            body_kind=BodyKind(doc["bodyKind"]),
        ),
        fingerprint=fingerprint,
        correlation_id=doc["correlationId"],
        policy=RetryPolicy(max_attempts, initial, max_delay),
        timeout_seconds=doc["timeout"],
        created_at=datetime.fromisoformat(created_at),
        updated_at=datetime.fromisoformat(updated_at),
        event_timestamp=from_iso(doc["eventTimestamp"]),
        # stored before destinations existed: the default destination of its target
        destination=doc.get("destination") or default_destination(doc["url"]),
        status=Status(status),
        next_attempt_at=from_iso(doc["nextAttemptAt"]),
        delivered_at=from_iso(doc["deliveredAt"]),
        attempt_count=doc["attemptCount"],
        round_start=doc["roundStart"],
        uncounted=doc.get("uncounted", 0),
        last_status_code=doc["lastStatusCode"],
        last_error=doc["lastError"],
        attempts=tuple(attempt_from_doc(a) for a in doc["attempts"]),
        queued=queued,
        version=version,
        callback_url=doc.get("callbackUrl"),
        callback_notice=doc.get("callbackNotice"),
        callback_notice_id=doc.get("callbackNoticeId"),
        deliver_at=from_iso(doc.get("deliverAt")),
    )


def destination_to_doc(d: Destination) -> dict[str, Any]:
    """Everything but the key and the version."""
    b = d.breaker
    return {
        "paused": d.settings.paused,
        "maxConcurrency": d.settings.max_concurrency,
        "ratePerSecond": d.settings.rate_per_second,
        "state": b.state.value,
        "failures": b.consecutive_failures,
        "openings": b.openings,
        "openedAt": iso(b.opened_at),
        "nextProbeAt": iso(b.next_probe_at),
        "probeUntil": iso(b.probe_until),
        "concurrency": d.concurrency,
        "lastDecreaseAt": iso(d.last_decrease_at),
        "heldUntil": iso(d.held_until),
        "rateNextAt": iso(d.rate_next_at),
        "lastAttemptAt": iso(d.last_attempt_at),
        "lastSuccessAt": iso(d.last_success_at),
        "lastError": d.last_error,
    }


def destination_from_doc(doc: dict[str, Any] | None, key: DestinationKey,
                         version: int) -> Destination:
    """A record with no document yet (listed because it had messages) is all defaults."""
    if doc is None:
        return Destination(key, version=version)
    return Destination(
        key=key,
        settings=DestinationSettings(doc["paused"], doc["maxConcurrency"],
                                     doc["ratePerSecond"]),
        breaker=Breaker(BreakerState(doc["state"]), doc["failures"], doc["openings"],
                        from_iso(doc["openedAt"]), from_iso(doc["nextProbeAt"]),
                        from_iso(doc["probeUntil"])),
        concurrency=doc["concurrency"],
        last_decrease_at=from_iso(doc["lastDecreaseAt"]),
        held_until=from_iso(doc["heldUntil"]),
        rate_next_at=from_iso(doc["rateNextAt"]),
        last_attempt_at=from_iso(doc["lastAttemptAt"]),
        last_success_at=from_iso(doc["lastSuccessAt"]),
        last_error=doc["lastError"],
        version=version,
    )
