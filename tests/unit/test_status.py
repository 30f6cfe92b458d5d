"""The status machine and the message moves built on it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.domain.errors import InvalidState, InvalidTransition
from notify_relay.domain.message import (
    INTERRUPTED_ERROR,
    POISON_ERROR,
    BodyKind,
    Content,
    Message,
    MessageKey,
)
from notify_relay.domain.retry import AttemptResult, Decision, Outcome, RetryPolicy
from notify_relay.domain.status import TRANSITIONS, Status, check_transition

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

LEGAL = {
    (Status.QUEUED, Status.DELIVERING),
    (Status.DELIVERING, Status.DELIVERED),
    (Status.DELIVERING, Status.RETRYING),
    (Status.DELIVERING, Status.FAILED),
    (Status.RETRYING, Status.DELIVERING),
    (Status.FAILED, Status.QUEUED),
    (Status.QUEUED, Status.CANCELLED),
    (Status.RETRYING, Status.CANCELLED),
    (Status.CANCELLED, Status.QUEUED),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("new", list(Status))
def test_transition_table(current: Status, new: Status) -> None:
    if (current, new) in LEGAL:
        check_transition(current, new)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, new)


def test_table_matches_legal_set() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


def test_final_statuses() -> None:
    assert {s for s in Status if s.is_final} == {Status.DELIVERED, Status.FAILED,
                                                 Status.CANCELLED}


def new_message(max_attempts: int = 3) -> Message:
    content = Content("https://p.example/h", "POST", (), None, BodyKind.NONE)
    return Message.new(MessageKey("s", "m"), content, correlation_id="c",
                       policy=RetryPolicy(max_attempts, 1.0, 10.0), timeout_seconds=5.0, now=NOW)


def finish(message: Message, outcome: Outcome, code: int = 503) -> Message:
    retry_at = NOW + timedelta(seconds=1) if outcome is Outcome.RETRY else None
    return message.finish_attempt(AttemptResult(status_code=code), Decision(outcome, retry_at),
                                  started_at=NOW, duration_ms=3, now=NOW)


def test_new_message_is_queued_and_due_now() -> None:
    m = new_message()
    assert (m.status, m.next_attempt_at, m.attempt_count, m.attempt_budget) == (
        Status.QUEUED, NOW, 0, 3)


def test_retry_then_success_records_every_attempt() -> None:
    m = finish(new_message().start_attempt(NOW), Outcome.RETRY)
    assert m.status is Status.RETRYING
    assert m.next_attempt_at == NOW + timedelta(seconds=1)
    assert m.last_error == "HTTP 503"
    m = finish(m.start_attempt(NOW), Outcome.SUCCESS, 200)
    assert m.status is Status.DELIVERED
    assert m.delivered_at == NOW
    assert m.next_attempt_at is None
    assert [(a.number, a.status_code, a.outcome) for a in m.attempts] == [
        (1, 503, Outcome.RETRY), (2, 200, Outcome.SUCCESS)]
    assert m.last_error is None


def test_give_up_fails_the_message() -> None:
    m = finish(new_message().start_attempt(NOW), Outcome.GIVE_UP, 404)
    assert m.status is Status.FAILED
    assert m.attempts[-1].outcome is Outcome.GIVE_UP


def test_cannot_finish_an_attempt_not_started() -> None:
    with pytest.raises(InvalidTransition):
        finish(new_message(), Outcome.SUCCESS, 200)


def test_interrupted_attempt_recorded_on_restart() -> None:
    m = new_message().start_attempt(NOW)  # the process dies here
    m = m.start_attempt(NOW + timedelta(seconds=5))
    assert m.status is Status.DELIVERING
    assert m.attempt_count == 1
    assert m.attempts[0].error == INTERRUPTED_ERROR
    assert m.attempts[0].outcome is Outcome.RETRY
    # when it started, not when the restart found it (duration unknown)
    assert (m.attempts[0].started_at, m.attempts[0].duration_ms) == (NOW, 0)
    assert m.updated_at == NOW + timedelta(seconds=5)


def test_poison_attempt_recorded_when_it_started() -> None:
    m = new_message(max_attempts=12).start_attempt(NOW)
    for restart in (1, 2, 3):
        m = m.start_attempt(NOW + timedelta(minutes=restart))
    assert [a.started_at for a in m.attempts] == [
        NOW, NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)]
    assert m.attempts[-1].error == POISON_ERROR


def test_interrupted_attempts_spend_no_budget() -> None:
    """With maxAttempts 2, two restarts once dead-lettered every message in flight."""
    m = new_message(max_attempts=2).start_attempt(NOW)
    m = m.start_attempt(NOW).start_attempt(NOW)  # two restarts, each cutting one short
    assert m.status is Status.DELIVERING
    assert (m.attempt_count, m.attempt_budget, m.attempt_in_round) == (2, 4, 1)
    m = finish(m, Outcome.RETRY)
    assert (m.attempt_count, m.attempt_budget, m.attempt_in_round) == (3, 4, 2)


def test_third_interruption_in_a_row_is_poison() -> None:
    m = new_message(max_attempts=12).start_attempt(NOW)
    m = m.start_attempt(NOW).start_attempt(NOW).start_attempt(NOW)
    assert m.status is Status.FAILED
    assert [a.error for a in m.attempts] == [INTERRUPTED_ERROR, INTERRUPTED_ERROR, POISON_ERROR]
    assert m.attempts[-1].outcome is Outcome.GIVE_UP


def test_a_real_attempt_between_ends_the_run_of_interruptions() -> None:
    m = new_message(max_attempts=12).start_attempt(NOW).start_attempt(NOW)
    m = finish(m, Outcome.RETRY).start_attempt(NOW)
    m = m.start_attempt(NOW).start_attempt(NOW)
    assert m.status is Status.DELIVERING
    assert m.attempt_count == 4


def test_manual_retry_gives_a_fresh_budget() -> None:
    m = new_message(max_attempts=2)
    m = finish(m.start_attempt(NOW), Outcome.RETRY)
    m = finish(m.start_attempt(NOW), Outcome.GIVE_UP)
    assert (m.status, m.attempt_count, m.attempt_budget) == (Status.FAILED, 2, 2)
    m = m.retry_by_hand(NOW)
    assert (m.status, m.attempt_count, m.attempt_budget, m.attempt_in_round) == (
        Status.QUEUED, 2, 4, 1)
    assert not m.queued


@pytest.mark.parametrize("moves", [0, 1])
def test_manual_retry_only_from_failed(moves: int) -> None:
    m = new_message()
    if moves:
        m = finish(m.start_attempt(NOW), Outcome.SUCCESS, 200)
    with pytest.raises(InvalidState):
        m.retry_by_hand(NOW)


# -- cancel (contract v1.1) -----------------------------------------------------------


def test_cancel_stops_a_queued_message_and_keeps_its_history() -> None:
    cancelled = new_message().cancel(NOW + timedelta(seconds=1))
    assert cancelled.status is Status.CANCELLED
    assert cancelled.next_attempt_at is None
    assert cancelled.updated_at == NOW + timedelta(seconds=1)
    assert cancelled.attempts == ()


def test_cancel_stops_a_retrying_message() -> None:
    retrying = finish(new_message().start_attempt(NOW), Outcome.RETRY)
    cancelled = retrying.cancel(NOW)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.attempt_count == 1


@pytest.mark.parametrize("outcome", [None, Outcome.SUCCESS, Outcome.GIVE_UP])
def test_cancel_refuses_an_attempt_in_flight_and_final_messages(outcome: Outcome | None) -> None:
    message = new_message().start_attempt(NOW)
    if outcome is not None:
        message = finish(message, outcome, 200 if outcome is Outcome.SUCCESS else 400)
    with pytest.raises(InvalidState):
        message.cancel(NOW)


def test_cancelled_is_final_until_retried_by_hand_with_a_fresh_budget() -> None:
    retrying = finish(new_message(max_attempts=2).start_attempt(NOW), Outcome.RETRY)
    requeued = retrying.cancel(NOW).retry_by_hand(NOW)
    assert requeued.status is Status.QUEUED
    assert requeued.attempt_budget == 1 + 2
    with pytest.raises(InvalidState):
        requeued.cancel(NOW).cancel(NOW)


def test_only_the_latest_attempts_keep_the_partners_answer() -> None:
    from notify_relay.domain.message import RESPONSES_KEPT
    from notify_relay.domain.response import PartnerResponse

    answer = PartnerResponse((("content-type", "text/plain"),), "busy", False)
    message = new_message(max_attempts=30)
    for _ in range(RESPONSES_KEPT + 5):
        message = message.start_attempt(NOW).finish_attempt(
            AttemptResult(status_code=503, response=answer), Decision(Outcome.RETRY, NOW),
            started_at=NOW, duration_ms=1, now=NOW)
    kept = [a.response is not None for a in message.attempts]
    assert kept == [False] * 5 + [True] * RESPONSES_KEPT
    assert [a.status_code for a in message.attempts] == [503] * (RESPONSES_KEPT + 5)


def test_a_retry_by_hand_still_waits_for_the_deliver_at() -> None:
    content = Content("https://p.example/h", "POST", (), None, BodyKind.NONE)
    at = NOW + timedelta(hours=1)
    scheduled = Message.new(MessageKey("s", "m"), content, correlation_id="c",
                            policy=RetryPolicy(3, 1.0, 10.0), timeout_seconds=5.0, now=NOW,
                            deliver_at=at)
    assert scheduled.next_attempt_at == at
    again = scheduled.cancel(NOW).retry_by_hand(NOW + timedelta(minutes=1))
    assert again.next_attempt_at == at
    late = scheduled.cancel(NOW).retry_by_hand(at + timedelta(minutes=1))
    assert late.next_attempt_at == at + timedelta(minutes=1)


def test_changed_is_dataclasses_replace() -> None:
    message = finish(new_message().start_attempt(NOW), Outcome.RETRY)
    later = NOW + timedelta(seconds=5)
    changes: dict[str, object] = {"status": Status.DELIVERING, "updated_at": later,
                                  "queued": True, "version": 7}
    assert message.changed(**changes) == replace(message, **changes)  # type: ignore[arg-type]
    assert message.changed(**changes) is not message
    assert (message.status, message.version) == (Status.RETRYING, 0)  # left as it was
    assert message.changed().__dict__ == message.__dict__


def test_changed_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="stauts"):
        new_message().changed(stauts=Status.FAILED)
