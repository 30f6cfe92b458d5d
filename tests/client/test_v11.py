"""Contract v1.1 calls for senders: `deliver_at`, and `submit_batch`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from notify_relay_client import (
    BatchItemError,
    Client,
    IdempotencyConflictError,
    MessageStatus,
    Submission,
    SubmitResult,
    ValidationError,
)

from tests.partner import Partner

pytestmark = pytest.mark.e2e


def test_deliver_at(relay: Client, partner: Partner, sender: str) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1)
    submitted = relay.submit(partner.url(f"/ok?{sender}"), deliver_at=at)
    waiting = relay.get(submitted.message_id)
    assert waiting.status is MessageStatus.QUEUED
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at >= at - timedelta(milliseconds=1)
    done = relay.wait_for(submitted.message_id, timeout=10)
    assert done.status is MessageStatus.DELIVERED
    assert done.attempts[0].started_at >= at - timedelta(milliseconds=1)
    with pytest.raises(ValidationError) as raised:
        relay.submit(partner.url("/ok"), deliver_at=datetime.now(UTC) + timedelta(days=400))
    assert [e.field for e in raised.value.errors] == ["deliverAt"]


def test_submit_batch(relay: Client, partner: Partner, sender: str) -> None:
    relay.submit(partner.url("/ok?first"), message_id="b-taken", body="one")
    results = relay.submit_batch([
        Submission(partner.url(f"/ok?{sender}"), body={"n": 1}),
        Submission(partner.url(f"/ok?{sender}"), message_id="b-2"),
        Submission("not a url", message_id="b-bad"),
        Submission(partner.url("/ok?first"), message_id="b-taken", body="other"),
        Submission(partner.url("/ok?first"), message_id="b-taken", body="one"),
    ])
    first, second, bad, conflict, duplicate = results
    assert isinstance(first, SubmitResult)
    assert len(first.message_id) == 36
    assert (first.duplicate, first.sender_id) == (False, sender)
    assert isinstance(second, SubmitResult)
    assert second.message_id == "b-2"
    assert isinstance(bad, BatchItemError)
    assert (bad.http_status, bad.code, bad.message_id) == (400, "VALIDATION_ERROR", "b-bad")
    assert [e.field for e in bad.errors] == ["targetUrl"]
    assert isinstance(conflict, BatchItemError)
    assert isinstance(conflict.to_exception(), IdempotencyConflictError)
    assert isinstance(duplicate, SubmitResult)
    assert duplicate.duplicate
    for result in (first, second):
        assert relay.wait_for(result.message_id, 10).status is MessageStatus.DELIVERED
    listed = {m.message_id for m in relay.list()}
    assert listed == {first.message_id, "b-2", "b-taken"}


def test_a_batch_that_is_not_one_is_refused(relay: Client, partner: Partner) -> None:
    with pytest.raises(ValidationError):
        relay.submit_batch([])
    with pytest.raises(ValidationError):
        relay.submit_batch([Submission(partner.url("/ok"))] * 101)
