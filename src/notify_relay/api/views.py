"""Messages as the contract shows them (camelCase, RFC 3339 UTC, credentials redacted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from notify_relay.domain.destination import BreakerState
from notify_relay.domain.message import Attempt, CallbackState, Message
from notify_relay.domain.redaction import redact_headers
from notify_relay.domain.response import PartnerResponse
from notify_relay.gate import DestinationView


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def response_view(r: PartnerResponse | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"headers": dict(r.headers), "body": r.body, "bodyTruncated": r.body_truncated}


def attempt_view(a: Attempt) -> dict[str, Any]:
    return {"number": a.number, "startedAt": rfc3339(a.started_at), "durationMs": a.duration_ms,
            "statusCode": a.status_code, "error": a.error, "outcome": a.outcome.value,
            "response": response_view(a.response)}


def message_view(m: Message) -> dict[str, Any]:
    return {
        "messageId": m.key.message_id,
        "senderId": m.key.sender_id,
        "status": m.status.value,
        "targetUrl": m.content.target_url,
        "method": m.content.method,
        "headers": redact_headers(m.content.headers),
        "correlationId": m.correlation_id,
        "timestamp": rfc3339(m.event_timestamp),
        "destination": m.destination,
        "createdAt": rfc3339(m.created_at),
        "updatedAt": rfc3339(m.updated_at),
        "nextAttemptAt": rfc3339(m.next_attempt_at),
        "deliveredAt": rfc3339(m.delivered_at),
        "attemptCount": m.attempt_count,
        "maxAttempts": m.attempt_budget,
        "lastStatusCode": m.last_status_code,
        "lastError": m.last_error,
        "attempts": [attempt_view(a) for a in m.attempts],
        **({"callbackUrl": m.callback_url, "callback": callback_view(m.callback)}
           if m.callback_url is not None else {}),
    }


def callback_view(c: CallbackState | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"status": c.status.value, "attemptCount": c.attempt_count,
            "lastError": c.last_error}


def submit_view(m: Message, *, duplicate: bool, correlation_id: str) -> dict[str, Any]:
    return {
        "messageId": m.key.message_id,
        "senderId": m.key.sender_id,
        "status": m.status.value,
        "stored": True,
        "queued": m.queued,
        "duplicate": duplicate,
        "correlationId": correlation_id,
    }


def destination_view(v: DestinationView) -> dict[str, Any]:
    d = v.destination
    breaker = d.breaker
    closed = breaker.state is BreakerState.CLOSED
    return {
        "destination": d.key.name,
        "state": breaker.state.value,
        "paused": d.settings.paused,
        "maxConcurrency": d.cap(v.default_concurrency),
        "currentConcurrency": d.current_concurrency(v.default_concurrency),
        "ratePerSecond": d.settings.rate_per_second,
        "inFlight": v.in_flight,
        "pending": v.pending,
        "consecutiveFailures": breaker.consecutive_failures,
        "openedAt": None if closed else rfc3339(breaker.opened_at),
        "nextProbeAt": None if closed else rfc3339(breaker.next_probe_at),
        "heldUntil": rfc3339(d.held_until) if d.held_until and d.held_until > v.now else None,
        "lastAttemptAt": rfc3339(d.last_attempt_at),
        "lastSuccessAt": rfc3339(d.last_success_at),
        "lastError": d.last_error,
    }
