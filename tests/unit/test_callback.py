"""Outcome notices: the notice of an outcome, and which notices tell of none."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.domain.callback import (
    is_notice,
    is_orphan,
    notice_due,
    notice_key,
    outcome_notice,
    parent_of,
)
from notify_relay.domain.message import BodyKind, Content, Message, MessageKey
from notify_relay.domain.retry import AttemptResult, Decision, Outcome, RetryPolicy
from notify_relay.domain.status import Status

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
KEY = MessageKey("shop", "order-7")


def message(callback: str | None = "https://cb.example/hook") -> Message:
    content = Content("https://p.example/h", "POST", (), b"{}", BodyKind.JSON)
    return replace(Message.new(KEY, content, correlation_id="c-1",
                               policy=RetryPolicy(3, 1.0, 10.0), timeout_seconds=5.0, now=NOW),
                   callback_url=callback)


def attempt(m: Message, outcome: Outcome, code: int) -> Message:
    retry_at = NOW + timedelta(seconds=1) if outcome is Outcome.RETRY else None
    return m.start_attempt(NOW).finish_attempt(
        AttemptResult(status_code=code), Decision(outcome, retry_at), started_at=NOW,
        duration_ms=1, now=NOW)


def test_the_notice_of_a_delivery_says_what_the_contract_says() -> None:
    delivered = attempt(attempt(message(), Outcome.RETRY, 503), Outcome.SUCCESS, 200)
    assert notice_due(delivered)
    notice = outcome_notice(delivered, policy=RetryPolicy(12, 5.0, 7200.0),
                            timeout_seconds=30.0, now=NOW)
    assert notice.key == MessageKey("shop", "order-7~callback~2")
    assert notice.content.target_url == "https://cb.example/hook"
    assert notice.content.header("Idempotency-Key") == "shop:order-7:callback:2"
    assert notice.content.body is not None
    assert json.loads(notice.content.body) == {
        "type": "message.delivered", "messageId": "order-7", "senderId": "shop",
        "status": "DELIVERED", "attemptCount": 2, "lastStatusCode": 200, "lastError": None,
        "deliveredAt": "2026-11-29T12:00:00.000Z", "correlationId": "c-1"}
    assert notice.policy == RetryPolicy(12, 5.0, 7200.0)
    assert notice.destination == "cb.example:443"
    assert is_notice(notice.key)
    assert not notice_due(notice)  # a notice has no notice of its own
    assert parent_of(notice.key) == (KEY, 2)


@pytest.mark.parametrize(("callback", "outcome", "code", "due"), [
    ("https://cb.example/", Outcome.GIVE_UP, 400, True),
    ("https://cb.example/", Outcome.RETRY, 503, False),
    (None, Outcome.SUCCESS, 200, False),
])
def test_a_notice_is_due_only_at_the_end_and_when_asked(
    callback: str | None, outcome: Outcome, code: int, due: bool
) -> None:
    assert notice_due(attempt(message(callback), outcome, code)) is due


def test_a_cancelled_message_has_no_notice() -> None:
    assert notice_due(message().cancel(NOW)) is False
    assert message().cancel(NOW).status is Status.CANCELLED


def test_orphans_are_notices_of_outcomes_never_recorded() -> None:
    delivered = attempt(message(), Outcome.SUCCESS, 200)
    assert not is_orphan(notice_key(KEY, 1), delivered)
    # the outcome's write failed: the message still shows attempt 1 in flight
    in_flight = message().start_attempt(NOW)
    assert is_orphan(notice_key(KEY, 1), in_flight)
    # then restarted: attempt 1 recorded as cut short, attempt 2 the real outcome
    retried = attempt(in_flight, Outcome.SUCCESS, 200)
    assert retried.attempts[0].outcome is Outcome.RETRY
    assert is_orphan(notice_key(KEY, 1), retried)
    assert not is_orphan(notice_key(KEY, 2), retried)


def test_a_notice_whose_message_retention_deleted_goes_on() -> None:
    """Only retention deletes a message, and only a final one: its outcome was recorded
    (the notice was cancelled as an orphan, found by a black-box audit)."""
    assert not is_orphan(notice_key(KEY, 1), None)
    assert not is_orphan(notice_key(KEY, 3), None)


def test_a_notice_key_of_another_incarnation_names_the_same_parent_and_attempt() -> None:
    """A message that reuses the id of one retention deleted, while that one's notice is
    still stored, has its notice under a key of its own: its parent and attempt read back
    as from the usual key."""
    key = MessageKey("s", "order-1")
    usual, own = notice_key(key, 3), notice_key(key, 3, 1796589476461)
    assert own != usual
    assert own.message_id == "order-1~callback~3~1796589476461"
    assert parent_of(own) == parent_of(usual) == (key, 3)
