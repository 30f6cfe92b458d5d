"""Each call of the sync client against the real server, and its typed errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from notify_relay_client import (
    AttemptOutcome,
    BreakerState,
    Client,
    IdempotencyConflictError,
    InvalidStateError,
    MessageStatus,
    NotFoundError,
    RetryPolicy,
    ValidationError,
    WaitTimeoutError,
)

from tests.client.conftest import FAST
from tests.e2e.api_client import ServerProcess
from tests.partner import Partner

pytestmark = pytest.mark.e2e
QUICK = RetryPolicy(max_attempts=2, initial_delay_seconds=0.01, max_delay_seconds=0.02)


def test_submit_get_and_wait_for(relay: Client, partner: Partner, sender: str) -> None:
    url = partner.url(f"/ok?{sender}")
    submitted = relay.submit(url, body={"order": 42}, headers={"X-A": "1"},
                             correlation_id="corr-client-1")
    assert submitted.status is MessageStatus.QUEUED
    assert (submitted.duplicate, submitted.sender_id) == (False, sender)
    assert len(submitted.message_id) == 36  # a UUID made by the client

    done = relay.wait_for(submitted.message_id, timeout=10)
    assert done.status is MessageStatus.DELIVERED
    assert done.is_final
    assert done.correlation_id == "corr-client-1"
    assert done.headers == {"X-A": "1"}
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.SUCCESS]
    assert done.delivered_at is not None
    assert done.delivered_at.tzinfo is UTC
    (got,) = partner.received(f"/ok?{sender}")
    assert got.body == b'{"order":42}'
    assert got.header("Idempotency-Key") == f"{sender}:{submitted.message_id}"
    assert relay.get(submitted.message_id) == done


def test_resubmission_is_a_duplicate_and_other_content_a_conflict(
        relay: Client, partner: Partner) -> None:
    first = relay.submit(partner.url("/ok"), message_id="dup-1", body="x",
                         timestamp=datetime(2026, 1, 2, tzinfo=UTC))
    again = relay.submit(partner.url("/ok"), message_id="dup-1", body="x")
    assert (first.duplicate, again.duplicate) == (False, True)
    with pytest.raises(IdempotencyConflictError) as raised:
        relay.submit(partner.url("/ok"), message_id="dup-1", body="y")
    error = raised.value
    assert (error.status, error.code) == (409, "IDEMPOTENCY_CONFLICT")
    assert error.correlation_id
    assert relay.get("dup-1").timestamp == datetime(2026, 1, 2, tzinfo=UTC)


def test_list_follows_every_page(relay: Client, partner: Partner) -> None:
    ids = [relay.submit(partner.url("/status/400"), message_id=f"page-{i}").message_id
           for i in range(7)]
    for message_id in ids:
        relay.wait_for(message_id, timeout=10)
    listed = [m.message_id for m in relay.list(page_size=3)]
    assert listed == ids[::-1]  # newest first, all 7 over 3 pages
    assert [m.message_id for m in relay.list(MessageStatus.FAILED, page_size=2)] == ids[::-1]
    assert list(relay.list(status="DELIVERED")) == []


def test_retry_a_failed_message(relay: Client, partner: Partner) -> None:
    submitted = relay.submit(partner.url("/status/503"), retry_policy=QUICK)
    failed = relay.wait_for(submitted.message_id, timeout=10)
    assert failed.status is MessageStatus.FAILED
    assert [a.outcome for a in failed.attempts] == [AttemptOutcome.RETRY, AttemptOutcome.GIVE_UP]

    queued = relay.retry(submitted.message_id)
    assert queued.status is MessageStatus.QUEUED
    again = relay.wait_for(submitted.message_id, timeout=10)
    assert (again.status, again.attempt_count) == (MessageStatus.FAILED, 4)


def test_retry_of_a_delivered_message_is_invalid_state(relay: Client, partner: Partner) -> None:
    message_id = relay.submit(partner.url("/ok")).message_id
    relay.wait_for(message_id, timeout=10)
    with pytest.raises(InvalidStateError) as raised:
        relay.retry(message_id)
    assert (raised.value.status, raised.value.code) == (409, "INVALID_STATE")


def test_cancel_then_wait_for_times_out_no_more(relay: Client, partner: Partner) -> None:
    # Given a paused destination: its messages wait, QUEUED
    paused = relay.pause("held")
    assert paused.paused is True
    message_id = relay.submit(partner.url("/ok"), destination="held").message_id
    with pytest.raises(WaitTimeoutError) as raised:
        relay.wait_for(message_id, timeout=0.3)
    assert raised.value.message.status is MessageStatus.QUEUED
    # When it is cancelled
    cancelled = relay.cancel(message_id)
    # Then it is final, and nothing is sent once the destination resumes
    assert cancelled.status is MessageStatus.CANCELLED
    assert relay.resume("held").paused is False
    with pytest.raises(InvalidStateError):
        relay.cancel(message_id)
    # queued again (the view may already show the attempt that started at once)
    assert relay.retry(message_id).status is not MessageStatus.CANCELLED
    assert relay.wait_for(message_id, timeout=10).status is MessageStatus.DELIVERED


def test_replay(relay: Client, partner: Partner) -> None:
    ids = [relay.submit(partner.url("/status/400"), destination="dead").message_id
           for _ in range(3)]
    for message_id in ids:
        relay.wait_for(message_id, timeout=10)
    # bounded by `until`: the replayed ones fail again at once, after it
    cut = datetime.now(UTC)
    result = relay.replay(destination="dead", since=cut - timedelta(minutes=5), until=cut,
                          limit=2)
    assert (result.replayed, result.more) == (2, True)
    assert relay.replay(destination="dead", until=cut).replayed == 1
    assert relay.replay(destination="nowhere").replayed == 0


def test_destinations(relay: Client, partner: Partner) -> None:
    for name in ("d-b", "d-a", "d-c"):
        relay.submit(partner.url("/ok"), destination=name)
    changed = relay.update_destination("d-b", max_concurrency=3, rate_per_second=50.0)
    assert (changed.max_concurrency, changed.rate_per_second) == (3, 50.0)
    names = [d.destination for d in relay.destinations(page_size=2)]
    assert names == ["d-a", "d-b", "d-c"]
    one = relay.destination("d-b")
    assert (one.state, one.max_concurrency) == (BreakerState.CLOSED, 3)
    restored = relay.update_destination("d-b", max_concurrency=None, rate_per_second=None)
    assert restored.rate_per_second is None
    assert restored.max_concurrency != 3
    assert [d.destination for d in relay.destinations(state="OPEN")] == []
    with pytest.raises(NotFoundError):
        relay.destination("never-used")


def test_typed_errors(relay: Client, partner: Partner) -> None:
    with pytest.raises(ValidationError) as raised:
        relay.submit("not a url", retry_policy=RetryPolicy(max_attempts=0))
    error = raised.value
    assert (error.status, error.code) == (400, "VALIDATION_ERROR")
    assert {e.field for e in error.errors} >= {"targetUrl", "retryPolicy.maxAttempts"}
    assert error.correlation_id
    with pytest.raises(NotFoundError) as missing:
        relay.get("no-such-message")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")


def test_senders_are_kept_apart(server: ServerProcess, relay: Client, partner: Partner) -> None:
    message_id = relay.submit(partner.url("/ok")).message_id
    with Client(server.base_url, sender_id="someone-else", retries=FAST) as other, \
            pytest.raises(NotFoundError):
        other.get(message_id)
