"""The Relay's use cases on the in-memory adapters, with a scripted deliverer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.api.submission import Submission
from notify_relay.domain.errors import (
    IdempotencyConflict,
    InvalidState,
    NotFound,
    StoreUnavailable,
    TargetNotAllowed,
)
from notify_relay.domain.message import INTERRUPTED_ERROR, Message, MessageKey
from notify_relay.domain.retry import AttemptResult, ErrorKind, Outcome
from notify_relay.domain.status import Status
from notify_relay.domain.submission import NewMessage
from notify_relay.gate import Gate
from notify_relay.ports import OutboundRequest
from notify_relay.service import REDRIVEN_ERROR, Relay

pytestmark = pytest.mark.anyio
KEY = MessageKey("s", "m-1")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class ScriptedDeliverer:
    def __init__(self, *results: AttemptResult) -> None:
        self.results = list(results)
        self.sent: list[OutboundRequest] = []

    async def send(self, request: OutboundRequest) -> AttemptResult:
        self.sent.append(request)
        return self.results.pop(0)


class FlakyQueue(MemoryQueue):
    """A queue whose next `failures` enqueues fail, as SQS can."""

    def __init__(self, clock: Clock, failures: int) -> None:
        super().__init__(clock)
        self.failures = failures

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None,
        destination: str = "",
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("queue unavailable")
        await super().enqueue(key, due_at, correlation_id, destination)


def relay(deliverer: ScriptedDeliverer | None = None, failures: int = 0) -> tuple[Relay, Clock]:
    clock = Clock()
    store = MemoryStore()
    gate = Gate(store.destinations, clock=clock, rand=lambda: 0.0)
    return Relay(store, FlakyQueue(clock, failures), deliverer or ScriptedDeliverer(), gate,
                 clock=clock, rand=lambda: 0.0), clock


def submission(**changes: object) -> NewMessage:
    return Submission.model_validate({"messageId": "m-1", "targetUrl": "https://p.example/h",
                                      "body": {"a": 1}, **changes}).to_new_message()


async def deliver_due(r: Relay) -> int:
    claims: Sequence = await r.queue.claim(10, 60)
    for claim in claims:
        await r.deliver(claim)
    return len(claims)


async def test_submit_stores_and_queues() -> None:
    r, _ = relay()
    accepted = await r.submit(submission(), "s", "c")
    assert not accepted.duplicate
    assert accepted.message.queued
    assert await r.queue.depth() == 1


async def test_duplicate_and_conflict() -> None:
    r, _ = relay()
    await r.submit(submission(), "s", "c")
    again = await r.submit(submission(), "s", "c2")
    assert again.duplicate
    assert await r.queue.depth() == 1
    with pytest.raises(IdempotencyConflict):
        await r.submit(submission(body={"a": 2}), "s", "c")


async def test_failed_enqueue_then_resubmission_queues_exactly_once() -> None:
    # Given the queue fails once after the message is stored
    r, _ = relay(failures=1)
    with pytest.raises(ConnectionError):
        await r.submit(submission(), "s", "c")
    stored = await r.store.get(KEY)
    assert stored is not None
    assert not stored.queued
    # When the sender retries with the same messageId
    again = await r.submit(submission(), "s", "c")
    # Then it is queued, once
    assert again.duplicate
    assert again.message.queued
    assert await r.queue.depth() == 1
    await r.submit(submission(), "s", "c")
    assert await r.queue.depth() == 1


async def test_reconcile_queues_what_the_sender_never_retried() -> None:
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=200)), failures=1)
    with pytest.raises(ConnectionError):
        await r.submit(submission(), "s", "c")
    assert await r.reconcile(older_than=timedelta(seconds=30)) == 0  # too fresh to judge
    clock.now += timedelta(seconds=31)
    assert await r.reconcile(older_than=timedelta(seconds=30)) == 1
    assert await r.reconcile(older_than=timedelta(seconds=30)) == 0
    assert await deliver_due(r) == 1
    assert (await r.get(KEY)).status is Status.DELIVERED


async def test_ip_literal_target_refused() -> None:
    r, _ = relay()
    with pytest.raises(TargetNotAllowed):
        await r.submit(submission(targetUrl="http://10.0.0.1/x"), "s", "c")
    assert await r.store.get(KEY) is None


async def test_deliver_retry_then_success_reschedules() -> None:
    d = ScriptedDeliverer(AttemptResult(status_code=503), AttemptResult(status_code=200))
    r, clock = relay(d)
    await r.submit(submission(retryPolicy={"initialDelaySeconds": 10}), "s", "c")
    assert await deliver_due(r) == 1
    message = await r.get(KEY)
    assert message.status is Status.RETRYING
    assert message.next_attempt_at == clock.now + timedelta(seconds=10)
    assert await deliver_due(r) == 0  # not due yet
    clock.now += timedelta(seconds=10)
    assert await deliver_due(r) == 1
    message = await r.get(KEY)
    assert message.status is Status.DELIVERED
    assert await r.queue.depth() == 0
    assert d.sent[0].headers == [
        ("User-Agent", "notify-relay/0.1.0"), ("X-Correlation-Id", "c"),
        ("Idempotency-Key", "s:m-1"), ("Content-Type", "application/json")]


async def test_give_up_and_manual_retry() -> None:
    d = ScriptedDeliverer(AttemptResult(error_kind=ErrorKind.TARGET_NOT_ALLOWED, error="no"),
                          AttemptResult(status_code=204))
    r, _ = relay(d)
    await r.submit(submission(), "s", "c")
    await deliver_due(r)
    failed = await r.get(KEY)
    assert failed.status is Status.FAILED
    assert failed.attempts[-1].outcome is Outcome.GIVE_UP
    assert await r.queue.depth() == 0
    retried = await r.retry(KEY)
    assert retried.status is Status.QUEUED
    assert retried.queued
    await deliver_due(r)
    assert (await r.get(KEY)).status is Status.DELIVERED
    with pytest.raises(InvalidState):
        await r.retry(KEY)


async def test_unknown_message() -> None:
    r, _ = relay()
    with pytest.raises(NotFound):
        await r.get(KEY)
    with pytest.raises(NotFound):
        await r.retry(KEY)


async def test_stale_queue_entry_of_a_final_message_is_dropped() -> None:
    r, _ = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    await r.submit(submission(), "s", "c")
    await deliver_due(r)
    await r.queue.enqueue(KEY, r.clock())  # a duplicate entry, as SQS may deliver
    assert await deliver_due(r) == 1
    assert await r.queue.depth() == 0
    assert (await r.get(KEY)).attempt_count == 1


async def test_duplicate_entry_does_not_interrupt_an_attempt_in_flight() -> None:
    # Given a queue that can hand the same entry to two workers (SQS standard)
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    r.queue.exclusive_claims = False
    await r.submit(submission(timeoutSeconds=10), "s", "c")
    # worker 1 received one copy of the entry and is mid-attempt
    started = (await r.store.get(KEY)).start_attempt(clock.now)
    await r.store.update(started)
    clock.now += timedelta(seconds=5)
    # When worker 2 receives the other copy
    (duplicate,) = await r.queue.claim(1, 60)
    await r.deliver(duplicate)
    # Then it leaves the message alone until worker 1's attempt must have ended
    message = await r.get(KEY)
    assert message.status is Status.DELIVERING
    assert message.attempt_count == 0
    assert await r.queue.next_due() == started.updated_at + timedelta(seconds=10 + 30)


async def test_exclusive_claims_resume_an_interrupted_attempt_at_once() -> None:
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    await r.submit(submission(), "s", "c")
    await r.store.update((await r.store.get(KEY)).start_attempt(clock.now))  # then a crash
    await r.queue.recover()
    assert await deliver_due(r) == 1
    message = await r.get(KEY)
    assert message.status is Status.DELIVERED
    assert [a.outcome for a in message.attempts] == [Outcome.RETRY, Outcome.SUCCESS]


async def test_an_interrupted_attempt_has_its_line_when_the_next_start_records_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every attempt has an "attempt" line; the one a crash cut short had none."""
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    await r.submit(submission(), "s", "c")
    await r.store.update((await r.store.get(KEY)).start_attempt(clock.now))  # then a crash
    await r.queue.recover()
    with caplog.at_level(logging.INFO, logger="notify_relay"):
        assert await deliver_due(r) == 1
    lines = [(getattr(rec, "attempt", None), getattr(rec, "error", None),
              getattr(rec, "outcome", None), getattr(rec, "messageId", None))
             for rec in caplog.records if rec.getMessage() == "attempt"]
    assert lines == [(1, INTERRUPTED_ERROR, "RETRY", "m-1"), (2, None, "SUCCESS", "m-1")]


async def test_an_attempt_whose_request_went_twice_says_so_in_its_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A partner that asks why it had one request twice within milliseconds (http.py sent
    it again after a kept connection dropped it) is answered by the attempt's own line,
    with the message's ids; attempts sent once carry no such field."""
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=503),
                                       AttemptResult(status_code=200, sent_twice=True)))
    await r.submit(submission(), "s", "c")
    with caplog.at_level(logging.INFO, logger="notify_relay"):
        assert await deliver_due(r) == 1
        clock.now += timedelta(hours=1)  # past the retry's delay
        assert await deliver_due(r) == 1
    lines = [(getattr(rec, "attempt", None), getattr(rec, "messageId", None),
              rec.__dict__.get("sentTwice"))
             for rec in caplog.records if rec.getMessage() == "attempt"]
    assert lines == [(1, "m-1", None), (2, "m-1", True)]


async def test_a_message_redriven_while_delivering_keeps_when_its_attempt_started() -> None:
    """The queue's redrive policy moved the entry of a message whose attempts kept crashing
    its worker: FAILED and kept, its cut-short attempt at the time it started."""
    r, clock = relay()
    await r.submit(submission(), "s", "c")
    started_at = clock.now
    await r.store.update((await r.store.get(KEY)).start_attempt(started_at))  # then a crash
    clock.now += timedelta(hours=1)
    assert await r.reconcile_dead_letter(KEY, by_worker=False) is False  # a dead letter kept
    message = await r.get(KEY)
    assert message.status is Status.FAILED
    assert [(a.started_at, a.error, a.outcome) for a in message.attempts] == [
        (started_at, INTERRUPTED_ERROR, Outcome.RETRY),
        (clock.now, REDRIVEN_ERROR, Outcome.GIVE_UP)]


async def test_an_attempts_outcome_is_recorded_through_a_briefly_unavailable_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The partner answered: a store fault for a moment must not cost a whole lease and a
    repeated request."""
    r, _ = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    await r.submit(submission(), "s", "c")
    store = r.store
    real_update = store.update
    failures = iter([True, True, False])

    async def flaky_update(message: Message) -> Message:
        if message.status is Status.DELIVERED and next(failures):
            raise StoreUnavailable("disk full")
        return await real_update(message)

    monkeypatch.setattr(store, "update", flaky_update)
    monkeypatch.setattr("notify_relay.service.RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    assert await deliver_due(r) == 1
    message = await r.get(KEY)
    assert message.status is Status.DELIVERED
    assert len(r.deliverer.sent) == 1  # type: ignore[attr-defined]


async def test_a_scheduled_message_that_arrives_early_goes_back_until_its_time() -> None:
    """SQS delays at most 15 minutes: an entry for a deliverAt an hour ahead arrives
    early (or a duplicate does) and must go back, unattempted, until then."""
    r, clock = relay(ScriptedDeliverer(AttemptResult(status_code=200)))
    at = clock.now + timedelta(hours=1)
    await r.submit(submission(deliverAt=at.isoformat().replace("+00:00", "Z")), "s", "c")
    assert (await r.get(KEY)).next_attempt_at == at
    clock.now += timedelta(minutes=15)
    await r.queue.enqueue(KEY, clock.now)  # makes the entry due now, as an SQS hop does
    assert await deliver_due(r) == 1
    assert r.deliverer.sent == []  # type: ignore[attr-defined]
    assert await r.queue.next_due() == at
    clock.now = at
    assert await deliver_due(r) == 1
    assert (await r.get(KEY)).status is Status.DELIVERED


async def test_submit_many_judges_each_and_queues_the_new_in_one_call() -> None:
    r, _ = relay()
    calls: list[int] = []
    original = r.queue.enqueue_many

    async def counted(entries: Sequence) -> None:  # type: ignore[type-arg]
        calls.append(len(entries))
        await original(entries)

    r.queue.enqueue_many = counted  # type: ignore[method-assign]
    items = [(submission(messageId=f"m-{i}"), "s") for i in range(5)]
    items.append((submission(messageId="m-0"), "s"))  # a resubmission of the first
    items.append((submission(messageId="m-1", body="other"), "s"))  # a conflict
    results = await r.submit_many(items, "c")
    assert [getattr(x, "duplicate", None) for x in results] == [False] * 5 + [True, None]
    assert isinstance(results[-1], IdempotencyConflict)
    assert calls == [5]
    assert await r.queue.depth() == 5
