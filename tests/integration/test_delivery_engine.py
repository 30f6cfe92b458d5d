"""The delivery engine on a real SQLite file against a real HTTP partner on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from notify_relay import service
from notify_relay.adapters.sqlite import SqliteDatabase, SqliteQueue, SqliteStore
from notify_relay.adapters.sqlite.queries import INLINE_BODY_BYTES
from notify_relay.api.submission import Submission
from notify_relay.bootstrap import build_embedded
from notify_relay.config import Settings, load
from notify_relay.domain.callback import notice_key
from notify_relay.domain.destination import Blocked, BreakerState, DestinationKey
from notify_relay.domain.errors import (
    CorruptRecord,
    StaleWrite,
    StoreUnavailable,
    TargetNotAllowed,
)
from notify_relay.domain.message import INTERRUPTED_ERROR, STOPPED_ERROR, Message, MessageKey
from notify_relay.domain.retry import AttemptResult, Outcome
from notify_relay.domain.status import Status
from notify_relay.gate import Hold
from notify_relay.ports import Claim, OutboundRequest, StartingQueue
from notify_relay.retention import RetentionSweeper
from notify_relay.runtime import Runtime
from notify_relay.worker.loop import Worker, WorkerSettings
from notify_relay.worker.wakeup import WakeUp
from tests.factories import NOW, make_message
from tests.partner import Partner
from tests.sockets import free_port

pytestmark = pytest.mark.anyio
FAST = {"initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def settings(db: Path, **flags: str) -> Settings:
    return load({"db": str(db), "allow_networks": "127.0.0.0/8", **flags}, environ={})


@asynccontextmanager
async def engine(config: Settings, body_room: int | None = None) -> AsyncIterator[Runtime]:
    """Started; `body_room`: the worker's bound on bodies in flight (no flag sets it)."""
    runtime = build_embedded(config)
    if body_room is not None:
        worker = worker_of(runtime)
        worker._settings = replace(worker._settings, body_bytes_in_flight=body_room)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def submit(runtime: Runtime, message_id: str, url: str, **fields: Any) -> Message:
    submission = Submission.model_validate({"messageId": message_id, "targetUrl": url, **fields})
    accepted = await runtime.relay.submit(submission.to_new_message(), "sender-a",
                                          f"corr-{message_id}")
    return accepted.message


async def settled(runtime: Runtime, message_id: str, timeout: float = 10.0,
                  until: Callable[[Message], bool] = lambda m: m.status.is_final) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        message = await runtime.relay.get(MessageKey("sender-a", message_id))
        if until(message):
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} still {message.status} after {timeout} s")
        await asyncio.sleep(0.02)


async def healthy_one(runtime: Runtime, partner: Partner, timeout: float = 10.0,
                      **fields: Any) -> tuple[Message, float]:
    """A message to a partner that answers at once, settled: it, and the seconds from its
    submission (how long whatever else was in flight held it back)."""
    started = time.monotonic()
    await submit(runtime, "ok-1", partner.url("/ok"), **fields)
    message = await settled(runtime, "ok-1", timeout=timeout)
    return message, time.monotonic() - started


async def sent(partner: Partner, segment: str, timeout: float = 10.0) -> None:
    """Until the partner has a request of `segment` (DELIVERING alone is not enough: the
    claim starts an attempt before its request goes)."""
    deadline = time.monotonic() + timeout
    while partner.max_in_progress[segment] < 1:
        assert time.monotonic() < deadline, f"no /{segment} request within {timeout} s"
        await asyncio.sleep(0.01)


def outcomes(message: Message) -> list[Outcome]:
    return [a.outcome for a in message.attempts]


async def test_success_sends_stored_request_and_contract_headers(
    tmp_path: Path, partner: Partner
) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "ok-1", partner.url("/ok?x=1"), method="put",
                     headers={"X-Custom": "yes"}, body={"order": 7})
        message = await settled(e, "ok-1")
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.SUCCESS]
    (got,) = partner.received("/ok")
    assert (got.method, got.path, got.body) == ("PUT", "/ok?x=1", b'{"order":7}')
    assert got.header("X-Custom") == "yes"
    assert got.header("Content-Type") == "application/json"
    assert got.header("User-Agent", ) == "notify-relay/0.1.0"
    assert got.header("X-Correlation-Id") == "corr-ok-1"
    assert got.header("Idempotency-Key") == "sender-a:ok-1"


async def test_sender_headers_win_over_defaults(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "h-1", partner.url("/ok"), body="plain",
                     headers={"User-Agent": "mine", "Idempotency-Key": "k"})
        await settled(e, "h-1")
    (got,) = partner.received("/ok")
    assert got.header("User-Agent") == "mine"
    assert got.header("Idempotency-Key") == "k"
    assert got.header("Content-Type") == "text/plain; charset=utf-8"
    assert got.body == b"plain"


async def test_null_body_sends_no_body(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "n-1", partner.url("/ok"), method="DELETE")
        await settled(e, "n-1")
    (got,) = partner.received("/ok")
    assert got.body == b""
    assert got.header("Content-Type") is None


async def test_5xx_then_success(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "f-1", partner.url("/flaky/2"), retryPolicy=FAST)
        message = await settled(e, "f-1")
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.RETRY, Outcome.RETRY, Outcome.SUCCESS]
    assert [a.status_code for a in message.attempts] == [503, 503, 200]
    keys = {r.header("Idempotency-Key") for r in partner.received("/flaky")}
    assert keys == {"sender-a:f-1"}


async def test_permanent_4xx_fails_at_once(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "p-1", partner.url("/status/404"), retryPolicy=FAST)
        message = await settled(e, "p-1")
    assert message.status is Status.FAILED
    assert outcomes(message) == [Outcome.GIVE_UP]
    assert (message.last_status_code, message.last_error) == (404, "HTTP 404")


async def test_exhausted_retries_dead_letter(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "x-1", partner.url("/status/503"),
                     retryPolicy={**FAST, "maxAttempts": 3})
        message = await settled(e, "x-1")
    assert message.status is Status.FAILED
    assert outcomes(message) == [Outcome.RETRY, Outcome.RETRY, Outcome.GIVE_UP]
    assert len(partner.received("/status/503")) == 3


async def test_429_retry_after_sets_the_delay(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "r-1", partner.url("/retry-after/1"), retryPolicy=FAST)
        message = await settled(e, "r-1")
    assert message.status is Status.DELIVERED
    assert [a.status_code for a in message.attempts] == [429, 200]
    first, second = partner.received("/retry-after")
    # maxDelaySeconds is 0.1, but the partner asked for 1 s
    assert second.at - first.at >= 0.9


async def test_timeout_is_retried_then_fails(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "t-1", partner.url("/slow/1.5"), timeoutSeconds=0.2,
                     retryPolicy={**FAST, "maxAttempts": 2})
        message = await settled(e, "t-1")
    assert message.status is Status.FAILED
    assert outcomes(message) == [Outcome.RETRY, Outcome.GIVE_UP]
    assert message.attempts[0].error == "timeout after 0.2 s"
    assert message.attempts[0].status_code is None


async def test_connection_refused_is_retried(tmp_path: Path) -> None:
    port = free_port()  # bound, then closed again: nothing listens there
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "c-1", f"http://127.0.0.1:{port}/x", retryPolicy={**FAST, "maxAttempts": 2})
        message = await settled(e, "c-1")
    assert message.status is Status.FAILED
    assert outcomes(message) == [Outcome.RETRY, Outcome.GIVE_UP]
    assert message.last_error is not None
    assert message.last_error.startswith("connection refused")


async def test_redirect_is_not_followed(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "d-1", partner.url("/redirect"), retryPolicy=FAST)
        message = await settled(e, "d-1")
    assert message.status is Status.FAILED
    assert message.last_status_code == 302
    assert partner.received("/ok") == []


async def test_ip_literal_refused_at_submission(tmp_path: Path, partner: Partner) -> None:
    async with engine(load({"db": str(tmp_path / "r.db")}, environ={})) as e:
        with pytest.raises(TargetNotAllowed):
            await submit(e, "s-1", partner.url("/ok"))
        with pytest.raises(TargetNotAllowed):
            await submit(e, "s-2", "http://[::ffff:169.254.169.254]/latest/meta-data")
    assert partner.received() == []


async def test_name_resolving_to_loopback_refused_at_connect(
    tmp_path: Path, partner: Partner
) -> None:
    async with engine(load({"db": str(tmp_path / "r.db")}, environ={})) as e:
        await submit(e, "s-3", f"http://localhost:{partner.port}/ok", retryPolicy=FAST)
        message = await settled(e, "s-3")
    assert message.status is Status.FAILED
    assert outcomes(message) == [Outcome.GIVE_UP]
    assert message.last_error is not None
    assert "target not allowed" in message.last_error
    assert partner.received() == []


async def test_signature_verifies_with_standardwebhooks(tmp_path: Path, partner: Partner) -> None:
    config = settings(tmp_path / "r.db", signing_secrets=f"sender-a={SECRET}",
                      api_keys="key-a=sender-a")
    async with engine(config) as e:
        await submit(e, "w-1", partner.url("/ok"), body={"signed": True})
        await settled(e, "w-1")
    (got,) = partner.received("/ok")
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload == {"signed": True}
    assert got.header("webhook-id") == "sender-a:w-1"


async def test_new_work_starts_without_polling_delay(tmp_path: Path, partner: Partner) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await asyncio.sleep(0.3)  # the worker is idle, asleep for up to 5 s
        start = time.monotonic()
        await submit(e, "q-1", partner.url("/ok"))
        await settled(e, "q-1", timeout=4.0)
        assert time.monotonic() - start < 2.0


async def test_graceful_stop_lets_attempts_finish(
    tmp_path: Path, partner: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="notify_relay.worker")
    config = settings(tmp_path / "r.db", shutdown_grace="5")
    async with engine(config) as e:
        await submit(e, "g-1", partner.url("/slow/0.5"))
        await sent(partner, "slow")
    (waiting,) = [r for r in caplog.records
                  if r.getMessage() == "stopping: waiting for the attempts in flight"]
    assert (waiting.count, waiting.graceSeconds) == (1, 5.0)  # type: ignore[attr-defined]
    async with engine(config) as e:
        message = await e.relay.get(MessageKey("sender-a", "g-1"))
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.SUCCESS]


async def test_abandoned_attempt_resumes_after_restart(
    tmp_path: Path, partner: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(tmp_path / "r.db", shutdown_grace="0.1")
    async with engine(config) as e:
        await submit(e, "a-1", partner.url("/slow/1"))
        await sent(partner, "slow")
        seen = datetime.now(UTC)
    named = [r for r in caplog.records if r.getMessage() == "abandoned an attempt at shutdown"]
    assert [(r.messageId, r.senderId, r.correlationId) for r in named] == [  # type: ignore[attr-defined]
        ("a-1", "sender-a", "corr-a-1")]
    await asyncio.sleep(0.2)  # the restart comes measurably later
    async with engine(config) as e:
        message = await settled(e, "a-1")
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.RETRY, Outcome.SUCCESS]
    assert message.attempts[0].error == STOPPED_ERROR  # by the stop itself, not a crash
    # recorded when it was made, before the partner saw it, not when the restart found it
    cut_short, resent = message.attempts
    assert cut_short.started_at <= seen < resent.started_at
    assert 50 <= cut_short.duration_ms < 1000  # from its start to the grace's end
    assert message.uncounted == 1  # the cut-short attempt spent nothing of the budget


async def test_an_attempt_a_crash_cut_short_gets_its_line_from_the_claim_that_records_it(
    tmp_path: Path, partner: Partner, caplog: pytest.LogCaptureFixture
) -> None:
    """The claim that starts an attempt (SqliteQueue.claim_started) records the attempt
    before it as interrupted: that one had no "attempt" line, its worker having died."""
    config = settings(tmp_path / "r.db")
    due = datetime.now(UTC) + timedelta(seconds=1)
    async with engine(config) as e:
        message = await submit(e, "c-1", partner.url("/ok"),
                               deliverAt=due.isoformat().replace("+00:00", "Z"))
        await e.relay.store.update(message.start_attempt(datetime.now(UTC)))  # then a crash
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="notify_relay"):
        async with engine(config) as e:
            message = await settled(e, "c-1")
    assert [(a.error, a.outcome) for a in message.attempts] == [
        (INTERRUPTED_ERROR, Outcome.RETRY), (None, Outcome.SUCCESS)]
    lines = [(r.attempt, r.error, r.outcome, r.correlationId)  # type: ignore[attr-defined]
             for r in caplog.records if r.getMessage() == "attempt"]
    assert lines == [(1, INTERRUPTED_ERROR, "RETRY", "corr-c-1"), (2, None, "SUCCESS", "corr-c-1")]


async def test_clean_stops_never_make_a_message_poison(tmp_path: Path, partner: Partner) -> None:
    """Three deploys in a row, each stopping while its attempt waits for a slow partner,
    made a healthy message FAILED: abandoned attempts counted as the crash rule's
    interruptions (three in a row: taken for the cause). A clean stop is not a crash."""
    config = settings(tmp_path / "r.db", shutdown_grace="0.1")
    for stop in range(1, 4):
        async with engine(config) as e:
            if stop == 1:
                await submit(e, "p-1", partner.url("/slow/1"))
            deadline = time.monotonic() + 10
            while len(partner.received("/slow")) < stop:
                assert time.monotonic() < deadline, f"attempt {stop} was not sent"
                await asyncio.sleep(0.01)
    async with engine(config) as e:
        message = await settled(e, "p-1")
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.RETRY] * 3 + [Outcome.SUCCESS]
    assert [a.error for a in message.attempts[:3]] == [STOPPED_ERROR] * 3
    assert len(partner.received("/slow")) == 4


async def test_a_destination_that_cannot_be_asked_is_asked_again_a_second_later(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in the destination's admission (not a verdict) once sent the entry straight
    back: a fault that lasted asked again hundreds of times a second, a traceback each."""
    async with engine(settings(tmp_path / "r.db")) as e:
        asked: list[float] = []

        async def broken(key: DestinationKey) -> None:
            asked.append(time.monotonic())
            raise RuntimeError("the destination cannot be asked")

        monkeypatch.setattr(e.relay.gate, "admit", broken)
        await submit(e, "f-1", partner.url("/ok"))
        await asyncio.sleep(1.5)
        monkeypatch.undo()
        message = await settled(e, "f-1")
    assert 1 <= len(asked) <= 2, len(asked)
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(asked))
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.SUCCESS]  # nothing spent while it could not ask


@pytest.mark.parametrize("alias", ["r.db", "link.db", "folder/link.db", "sub/../r.db"])
async def test_second_process_on_the_same_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alias: str) -> None:
    """However the path names the file: through a symlink, a second server once took a lock
    of its own and released every lease of the first, and partners got messages twice."""
    from notify_relay.adapters.sqlite import DatabaseLocked

    (tmp_path / "link.db").symlink_to("r.db")
    (tmp_path / "folder").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)  # the aliases are relative
    async with engine(settings(tmp_path / "r.db")):
        with pytest.raises(DatabaseLocked):
            build_embedded(settings(Path(alias)))


async def test_invalid_status_line_is_named_for_what_it_is(tmp_path: Path) -> None:
    """A partner that answers garbage: no 400 was sent, so none is recorded."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 2OO NOT-A-STATUS\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with engine(settings(tmp_path / "r.db")) as e:
            await submit(e, "g-1", f"http://127.0.0.1:{port}/x",
                         retryPolicy={**FAST, "maxAttempts": 1})
            message = await settled(e, "g-1")
    finally:
        server.close()
    assert message.last_status_code is None
    assert message.last_error is not None
    assert message.last_error.startswith("invalid HTTP response from the partner")
    assert "400" not in message.last_error


async def test_an_exception_inside_an_attempt_is_recorded_not_looped(tmp_path: Path,
                                                                      partner: Partner) -> None:
    """Anything one attempt raises becomes that attempt's recorded error: before, the message
    stayed DELIVERING and an 'interrupted' attempt was recorded every lease period."""
    class Exploding:
        async def send(self, request: OutboundRequest) -> AttemptResult:
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a broken request")

    async with engine(settings(tmp_path / "r.db")) as e:
        e.relay.deliverer = Exploding()
        await submit(e, "e-1", partner.url("/ok"))
        message = await settled(e, "e-1")
    assert message.status is Status.FAILED
    assert [a.outcome for a in message.attempts] == [Outcome.GIVE_UP]
    assert message.last_error is not None
    assert message.last_error.startswith("UnicodeEncodeError")
    assert partner.received("/ok") == []


async def test_a_row_that_cannot_be_read_is_quarantined_not_retried_forever(
    tmp_path: Path, partner: Partner
) -> None:
    config = settings(tmp_path / "r.db")
    async with engine(config) as e:
        await e.relay.gate.configure(DestinationKey("sender-a", "held"), paused=True)
        for mid in ("ok-1", "bad-1"):
            await submit(e, mid, partner.url("/ok"), destination="held")
        conn = sqlite3.connect(config.db)
        conn.execute("UPDATE messages SET doc = ? WHERE message_id = 'bad-1'", (b"{not json",))
        conn.commit()
        conn.close()
        page = await e.relay.list("sender-a", None, 10, None)
        assert [m.key.message_id for m in page.items] == ["ok-1"]  # left out, not a 500
        with pytest.raises(CorruptRecord, match="bad-1"):
            await e.relay.get(MessageKey("sender-a", "bad-1"))
        await e.relay.gate.configure(DestinationKey("sender-a", "held"), paused=False)
        await settled(e, "ok-1")
        deadline = time.monotonic() + 10
        while await e.relay.queue.depth() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert await e.relay.queue.depth() == 0  # dead-lettered, not leased again forever
        assert e.metrics is not None
        assert b"notify_relay_quarantined_total 1.0" in e.metrics.render(0)


async def test_an_entry_whose_step_failed_is_released_in_seconds_not_at_its_lease_end(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that refuses a write (a full disk, a read-only remount) fails the attempt's
    first step; the lease (180 s) then held the message QUEUED for minutes. The worker gives
    the lease back, and retries that too while the queue refuses it. (Here the Relay
    starts the attempt itself, not its claim: claim_started needs no write before the
    request.)"""
    async with engine(settings(tmp_path / "r.db")) as e:
        monkeypatch.setattr(service.Relay, "start_claimed", lambda self, message: None)
        store, queue = e.relay.store, e.relay.queue
        real_update, real_reschedule = store.update, queue.reschedule
        failures = {"update": 1, "reschedule": 1}

        async def update(message: Message) -> Message:
            if message.status is Status.DELIVERING and failures["update"]:
                failures["update"] -= 1
                raise StoreUnavailable("attempt to write a readonly database")
            return await real_update(message)

        async def reschedule(claim: Any, due_at: Any) -> None:
            if failures["reschedule"]:
                failures["reschedule"] -= 1
                raise StoreUnavailable("attempt to write a readonly database")
            await real_reschedule(claim, due_at)

        store.update = update  # type: ignore[method-assign]
        queue.reschedule = reschedule  # type: ignore[method-assign]
        await submit(e, "ro-1", partner.url("/ok"))
        message = await settled(e, "ro-1", timeout=20)
    assert message.status is Status.DELIVERED
    assert failures == {"update": 0, "reschedule": 0}
    assert outcomes(message) == [Outcome.SUCCESS]


async def test_an_outcome_that_cannot_be_recorded_is_not_sent_again_at_once(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request went out; only writing its outcome failed. Releasing that entry in a
    second (as for a failed first step) would send the request again every few seconds."""
    monkeypatch.setattr(service, "RECORD_RETRY_DELAYS", (0.01,))
    async with engine(settings(tmp_path / "r.db")) as e:
        async def refuse(message: Message, claim: Any) -> Message:
            raise StoreUnavailable("database or disk is full")

        monkeypatch.setattr(e.relay.store, "update_settled", refuse)
        await submit(e, "full-1", partner.url("/ok"))
        await asyncio.sleep(4)
        assert len(partner.received("/ok")) == 1
        message = await e.relay.get(MessageKey("sender-a", "full-1"))
        assert message.status is Status.DELIVERING  # the lease's end will record it interrupted


async def test_a_notice_write_that_fails_once_does_not_send_the_request_again(
    tmp_path: Path, partner: Partner
) -> None:
    """The outcome notice is stored after the partner answered: a store fault there is
    ridden through as the outcome's own write is, not turned into an interrupted attempt
    and a second request (found by an adversarial test: the partner saw two)."""
    async with engine(settings(tmp_path / "r.db")) as e:
        real_create = e.relay.store.create
        failures = [1]

        async def create(message: Message) -> tuple[Message, bool]:
            if "~" in message.key.message_id and failures[0]:
                failures[0] -= 1
                raise StoreUnavailable("attempt to write a readonly database")
            return await real_create(message)

        e.relay.store.create = create  # type: ignore[method-assign]
        await submit(e, "cb-1", partner.url("/ok"), callbackUrl=partner.url("/callback"))
        message = await settled(e, "cb-1")
        deadline = time.monotonic() + 10
        while not partner.received("/callback") and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert failures == [0]
    assert outcomes(message) == [Outcome.SUCCESS]
    assert len(partner.received("/ok")) == 1
    assert len(partner.received("/callback")) == 1


async def test_a_notice_still_retrying_when_retention_deletes_its_message_goes_on(
    tmp_path: Path, partner: Partner
) -> None:
    """Retention deletes a final message whose notice waits for a retry: the notice is
    delivered all the same (it was cancelled as the notice of an outcome never recorded,
    found by a black-box audit with a 503 callback and a short --retention)."""
    hook = "/switch/callback"  # 503 until the parent is gone
    partner.failing.add("callback")
    async with engine(settings(tmp_path / "r.db", initial_delay="200ms",
                               max_delay="500ms")) as e:
        await submit(e, "kept-1", partner.url("/ok"), callbackUrl=partner.url(hook))
        notice = notice_key(MessageKey("sender-a", "kept-1"), 1)
        await settled(e, "kept-1")

        async def stored_notice(until: Callable[[Message], bool]) -> Message:
            deadline = time.monotonic() + 10
            while True:
                found = await e.relay.store.get(notice, with_body=False)
                if found is not None and until(found):
                    return found
                assert time.monotonic() < deadline, f"notice still {found}"
                await asyncio.sleep(0.02)

        await stored_notice(lambda n: n.status is Status.RETRYING)
        sweeper = RetentionSweeper(e.relay.store, timedelta(days=1),
                                   clock=lambda: datetime.now(UTC) + timedelta(days=2))
        assert await sweeper.sweep() == 1
        assert await e.relay.store.get(MessageKey("sender-a", "kept-1")) is None
        partner.failing.discard("callback")
        delivered = await stored_notice(lambda n: n.status.is_final)
    assert delivered.status is Status.DELIVERED
    assert [r.header("Idempotency-Key") for r in partner.received(hook)][-1] == (
        "sender-a:kept-1:callback:1")


async def test_an_id_used_again_after_retention_gets_a_notice_of_its_own(
    tmp_path: Path, partner: Partner
) -> None:
    """The id of a message retention deleted is used again while its notice is still
    stored: the new message's notice was that one (same key), so its outcome was never
    told, and its view showed the old notice (helper-50's audit)."""
    partner.failing.add("old")  # the first message's callback: 503 all along
    async with engine(settings(tmp_path / "r.db", initial_delay="200ms",
                               max_delay="500ms")) as e:
        await submit(e, "again-1", partner.url("/ok"), callbackUrl=partner.url("/switch/old"))
        await settled(e, "again-1")
        old = notice_key(MessageKey("sender-a", "again-1"), 1)
        deadline = time.monotonic() + 10
        while (found := await e.relay.store.get(old, with_body=False)) is None or (
                found.status is not Status.RETRYING):
            assert time.monotonic() < deadline, f"notice still {found}"
            await asyncio.sleep(0.02)
        sweeper = RetentionSweeper(e.relay.store, timedelta(days=1),
                                   clock=lambda: datetime.now(UTC) + timedelta(days=2))
        assert await sweeper.sweep() == 1  # the message; its notice waits for a retry
        await submit(e, "again-1", partner.url("/ok?second"),
                     callbackUrl=partner.url("/new-callback"))
        second = await settled(e, "again-1")
        assert second.status is Status.DELIVERED
        deadline = time.monotonic() + 10
        while (viewed := await e.relay.get(MessageKey("sender-a", "again-1"))).callback is None \
                or viewed.callback.status is not Status.DELIVERED:
            assert time.monotonic() < deadline, f"its notice: {viewed.callback}"
            await asyncio.sleep(0.02)
        still = await e.relay.store.get(old, with_body=False)
        assert still is not None  # the first message's notice goes on, its own
        assert not still.status.is_final
    (told,) = partner.received("/new-callback")
    assert json.loads(told.body)["attemptCount"] == 1
    assert told.header("Idempotency-Key") == "sender-a:again-1:callback:1"  # the contract's


async def test_the_notice_of_a_deleted_message_is_not_taken_for_a_later_ones(
    tmp_path: Path, partner: Partner
) -> None:
    """The id of a message retention deleted is used again while its notice is still
    retrying: that notice took the new message for its parent, and was dropped as the
    notice of an outcome never recorded once the new one's first attempt failed
    (helper-51's review). It goes on, and each outcome is told once."""
    partner.failing.update({"old", "new"})  # the first callback, the second target: 503
    async with engine(settings(tmp_path / "r.db", initial_delay="200ms",
                               max_delay="500ms")) as e:
        key = MessageKey("sender-a", "again-1")
        await submit(e, "again-1", partner.url("/ok"), callbackUrl=partner.url("/switch/old"))
        await settled(e, "again-1")
        old = notice_key(key, 1)

        async def old_notice(until: Callable[[Message], bool]) -> Message:
            deadline = time.monotonic() + 10
            while (found := await e.relay.store.get(old, with_body=False)) is None or (
                    not until(found)):
                assert time.monotonic() < deadline, f"notice still {found}"
                await asyncio.sleep(0.02)
            return found

        await old_notice(lambda n: n.status is Status.RETRYING)
        sweeper = RetentionSweeper(e.relay.store, timedelta(days=1),
                                   clock=lambda: datetime.now(UTC) + timedelta(days=2))
        assert await sweeper.sweep() == 1  # the message; its notice waits for a retry
        await submit(e, "again-1", partner.url("/switch/new"),
                     callbackUrl=partner.url("/new-callback"))
        deadline = time.monotonic() + 10
        while not (await e.relay.get(key)).attempts:  # its first attempt: 503, RETRY
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        tried = (await old_notice(lambda n: True)).attempt_count
        await old_notice(lambda n: n.attempt_count > tried or n.status.is_final)
        partner.failing.clear()
        assert (await old_notice(lambda n: n.status.is_final)).status is Status.DELIVERED
        deadline = time.monotonic() + 10
        while (viewed := await e.relay.get(key)).callback is None \
                or viewed.callback.status is not Status.DELIVERED:
            assert time.monotonic() < deadline, f"its notice: {viewed.callback}"
            await asyncio.sleep(0.02)
    assert viewed.status is Status.DELIVERED
    (told,) = partner.received("/new-callback")
    assert json.loads(told.body)["attemptCount"] == 2
    assert told.header("Idempotency-Key") == "sender-a:again-1:callback:2"  # the contract's
    assert json.loads(partner.received("/switch/old")[-1].body)["attemptCount"] == 1


def first_attempt_delays(runtime: Runtime) -> tuple[float, float]:
    """(count, sum) of the first-attempt delay histogram."""
    assert runtime.metrics is not None
    values = {sample.name: sample.value
              for metric in runtime.metrics.registry.collect()
              if metric.name == "notify_relay_first_attempt_delay_seconds"
              for sample in metric.samples}
    return (values["notify_relay_first_attempt_delay_seconds_count"],
            values["notify_relay_first_attempt_delay_seconds_sum"])


async def test_first_attempt_delay_counts_once_from_when_the_message_is_due(
    tmp_path: Path, partner: Partner,
) -> None:
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "d-1", partner.url("/flaky/2"), retryPolicy=FAST)
        await settled(e, "d-1")  # three attempts, one first attempt
        assert first_attempt_delays(e)[0] == 1
        due = datetime.now(UTC) + timedelta(seconds=1)
        await submit(e, "d-2", partner.url("/ok"),
                     deliverAt=due.isoformat().replace("+00:00", "Z"))
        await settled(e, "d-2")
        count, total = first_attempt_delays(e)
    assert count == 2
    # from deliverAt, not from acceptance a second earlier: the relay's own delay only
    assert 0 <= total < 0.8


@pytest.mark.parametrize("refusal", ["hold", "error"])
async def test_an_attempt_its_claim_started_but_the_destination_refused_is_put_back(
    refusal: str, tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim starts the attempt (DELIVERING) before the destination gives its leave; a
    refusal (a hold, or a failure to ask) puts the message back as it was, so the next
    claim does not take it for an attempt cut short."""
    async with engine(settings(tmp_path / "r.db")) as e:
        gate = e.relay.gate
        real_admit = gate.admit
        refused = []

        async def admit(key: DestinationKey) -> Any:
            if not refused:
                refused.append(key)
                if refusal == "error":
                    raise StoreUnavailable("database is locked")
                return Hold(Blocked.RATE, datetime.now(UTC) + timedelta(milliseconds=200))
            return await real_admit(key)

        monkeypatch.setattr(gate, "admit", admit)
        await submit(e, "held-1", partner.url("/ok"))
        message = await settled(e, "held-1", timeout=20)
    assert refused
    assert message.status is Status.DELIVERED
    assert outcomes(message) == [Outcome.SUCCESS]  # no attempt taken for interrupted


async def test_a_started_claim_delivered_without_leave_is_put_back_first(
    tmp_path: Path, partner: Partner
) -> None:
    """deliver() given a started claim but no ticket (a caller other than the worker) puts
    the start back and takes the ordinary path: one attempt, not an interrupted one too."""
    rt = build_embedded(settings(tmp_path / "r.db"))
    await rt.relay.deliverer.open()  # type: ignore[attr-defined]
    try:
        await submit(rt, "s-1", partner.url("/ok"))
        queue = rt.relay.queue
        assert isinstance(queue, StartingQueue)
        (claim,) = await queue.claim_started(10, 60.0, None, rt.relay.start_claimed)
        assert claim.started is not None
        await rt.relay.deliver(claim)
        message = await rt.relay.get(MessageKey("sender-a", "s-1"))
        assert message.status is Status.DELIVERED
        assert outcomes(message) == [Outcome.SUCCESS]
    finally:
        await rt.stop()


async def unstarted_worker(tmp_path: Path) -> tuple[Runtime, StartingQueue, Worker]:
    """An embedded runtime, its delivery client open, and a worker of its own (not started):
    for tests that step into the worker's claims."""
    rt = build_embedded(settings(tmp_path / "r.db"))
    await rt.relay.deliverer.open()  # type: ignore[attr-defined]
    queue = rt.relay.queue
    assert isinstance(queue, StartingQueue)
    return rt, queue, Worker(rt.relay, queue, WorkerSettings(), WakeUp())


async def test_a_stop_during_a_claim_gives_its_entries_back_unstarted(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim starts its attempts; a stop that comes while it is written must not leave
    them DELIVERING (the next start would record attempts cut short that never began)."""
    rt, queue, worker = await unstarted_worker(tmp_path)
    real = queue.claim_started
    stopping: list[asyncio.Task[None]] = []

    async def claim_then_stop(*args: Any) -> Any:
        claims = await real(*args)
        if claims and not stopping:  # the stop arrives while the claim is written
            stopping.append(asyncio.create_task(worker.stop()))
            await asyncio.sleep(0)
        return claims

    monkeypatch.setattr(queue, "claim_started", claim_then_stop)
    try:
        await submit(rt, "s-1", partner.url("/ok"))
        await worker.start()
        for _ in range(500):
            if stopping:
                break
            await asyncio.sleep(0.01)
        assert stopping, "the worker did not claim"
        await asyncio.wait_for(stopping[0], 10)
        message = await rt.relay.get(MessageKey("sender-a", "s-1"))
        assert message.status is Status.QUEUED
        assert message.attempts == ()
        assert partner.received("/ok") == []
        (again,) = await queue.claim(10, 60.0)  # due at once
        assert again.key == message.key
    finally:
        await rt.stop()


async def test_a_stop_during_a_flush_lets_it_end_before_the_last_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A destination's statistics written as the stop came: the flush was cancelled while
    its write still landed, and the stop's own flush wrote over it with the version before
    (StaleWrite, logged with a traceback: CI caught it in tests/e2e/test_processes.py)."""
    rt = build_embedded(settings(tmp_path / "r.db"))
    queue = rt.relay.queue
    assert isinstance(queue, StartingQueue)
    worker = Worker(rt.relay, queue, WorkerSettings(flush_every_seconds=0.2), WakeUp())
    db = rt.relay.store._db  # type: ignore[attr-defined]
    real_commit = db._commit
    committing, release = threading.Event(), threading.Event()

    def held_commit() -> None:  # the flush's write, held in its COMMIT
        committing.set()
        release.wait(10)
        real_commit()

    key = DestinationKey("sender-a", "partner.example")
    gate = rt.relay.gate
    try:
        ticket = await gate.admit(key)
        assert not isinstance(ticket, Hold)
        await gate.finish(ticket, AttemptResult(status_code=200))  # statistics: to flush
        await worker.start()  # its own writes at start done
        db._commit = held_commit
        for _ in range(500):
            if committing.is_set():
                break
            await asyncio.sleep(0.01)
        assert committing.is_set(), "the worker did not flush"
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.wait_for(stopping, 10)
        db._commit = real_commit
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        stored = await gate.store.get(key)
        assert stored is not None
        assert stored.last_success_at is not None
    finally:
        release.set()
        await rt.stop()


async def test_a_cancel_takes_the_queue_entry_with_it(tmp_path: Path, partner: Partner) -> None:
    """A cancelled message's entry stayed until it came due (a deliverAt up to 30 days
    ahead), counted in notify_relay_queue_depth all along; a retry by hand queues it again."""
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with engine(settings(tmp_path / "r.db")) as e:
        await submit(e, "x-1", partner.url("/ok"), deliverAt=later)
        await submit(e, "x-2", partner.url("/ok"), deliverAt=later)
        assert await e.relay.queue.depth() == 2
        cancelled = await e.relay.cancel(MessageKey("sender-a", "x-1"))
        assert cancelled.status is Status.CANCELLED
        assert await e.relay.queue.depth() == 1  # x-2's entry only
        db = e.relay.store._db  # type: ignore[attr-defined]
        write, writes = db.write, []

        def counted(fn: Any, **kwargs: Any) -> Any:
            writes.append(fn)
            return write(fn, **kwargs)

        db.write = counted
        retried = await e.relay.retry(MessageKey("sender-a", "x-1"))
        db.write = write
        assert retried.status is Status.QUEUED
        assert retried.queued
        assert len(writes) == 1  # the message, marked queued, and its entry: one write
        assert await e.relay.queue.depth() == 2  # queued again, still for its deliverAt
        stored = await e.relay.store.get(MessageKey("sender-a", "x-1"))
        assert stored is not None
        assert stored.queued
    assert partner.received("/ok") == []


async def test_partners_that_hang_do_not_hold_back_the_others(
    tmp_path: Path, partner: Partner
) -> None:
    """Two destinations hanging at their cap of 4 fill a pool of 8: every other destination
    waited for their timeouts. An attempt waiting over a second for its answer now leaves
    the pool (up to as many again), so a third destination's message goes in about that."""
    config = settings(tmp_path / "r.db", concurrency="8", destination_concurrency="4")
    async with engine(config) as e:
        for i in range(10):
            await submit(e, f"h-{i}", partner.url("/slow/6"), destination=f"hang-{i % 2}",
                         timeoutSeconds=10)
        await received_at_least(partner, "/slow", 8)
        message, took = await healthy_one(e, partner)
        assert len(partner.received("/slow")) == 8  # each hanging one kept to its cap
    assert message.status is Status.DELIVERED
    assert took < 3.0, took  # a hanging attempt's answer comes after 6 s


async def test_a_probe_for_a_cancelled_message_leaves_the_breaker_open(
    tmp_path: Path, partner: Partner
) -> None:
    """The worker takes a destination's leave (the probe's, past the cool-down) before it
    reads the message; one found cancelled (its entry still queued, as SQS keeps it, or a
    cancel between the claim and the read) sends nothing. The breaker stayed HALF_OPEN
    with nothing in flight, lastAttemptAt at the probe's time; it must stay OPEN."""
    config = settings(tmp_path / "r.db", breaker_failures="3", breaker_cooldown="1")
    partner.failing.add("cp")
    key = DestinationKey("sender-a", "cp")
    async with engine(config) as e:
        for i in range(3):
            await submit(e, f"cp-{i}", partner.url("/switch/cp"), destination="cp",
                         retryPolicy=FAST)
        deadline = time.monotonic() + 10
        while e.relay.gate.cached(key).breaker.state is not BreakerState.OPEN:
            assert time.monotonic() < deadline, "the breaker did not open"
            await asyncio.sleep(0.01)
        for i in range(3):  # final, each entry left queued
            for _ in range(5):  # the worker may rewrite it between the read and the write
                message = await settled(e, f"cp-{i}",
                                        until=lambda m: m.status is Status.RETRYING)
                try:
                    await e.relay.store.update(message.cancel(datetime.now(UTC)))
                    break
                except StaleWrite:  # as Relay.cancel does: read it again
                    continue
            else:
                raise AssertionError(f"cp-{i} kept changing; it was never cancelled")
        before = e.relay.gate.cached(key)
        sent = len(partner.received("/switch/cp"))
        assert before.breaker.next_probe_at is not None
        wait = (before.breaker.next_probe_at - datetime.now(UTC)).total_seconds()
        await asyncio.sleep(max(0.0, wait) + 0.5)
        after = e.relay.gate.cached(key)
        assert await e.relay.queue.depth() == 0  # each claimed, found final, dropped
    assert (after.breaker.state, after.breaker.probe_until) == (BreakerState.OPEN, None)
    assert after.last_attempt_at == before.last_attempt_at
    assert len(partner.received("/switch/cp")) == sent


def worker_of(runtime: Runtime) -> Worker:
    (worker,) = [step.__self__ for step in runtime.starts
                 if isinstance(getattr(step, "__self__", None), Worker)]
    return worker


async def received_at_least(partner: Partner, path: str, n: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while len(partner.received(path)) < n:
        assert time.monotonic() < deadline, f"{n} requests to {path} did not come"
        await asyncio.sleep(0.01)


async def test_bodies_held_in_flight_stay_within_their_bound(
    tmp_path: Path, partner: Partner
) -> None:
    """Each attempt holds its body (up to 6 MiB) until its answer: with no bound, claims read
    64 of them at a time on the loop and the attempts in flight could hold 512 (3 GiB).
    With room for 3 MiB, three 1 MiB attempts go; once they have waited a second for their
    answer, their bodies stop counting, up to 3 MiB more (as the pool does), and three more
    go; the last three wait for answers. Two destinations, each capped as the pool is, so
    that its share is all of the bound: one destination's bodies, waiting or not, take at
    most its share."""
    async with engine(settings(tmp_path / "r.db", destination_concurrency="256"),
                      body_room=3 << 20) as runtime:
        worker = worker_of(runtime)
        # all nine due at once: the claims go on while there is room
        held = [DestinationKey("sender-a", f"d{d}") for d in range(2)]
        for key in held:
            await runtime.relay.gate.configure(key, paused=True)
        for i in range(9):
            await submit(runtime, f"b-{i}", partner.url("/slow/3"), destination=f"d{i % 2}",
                         body="x" * (1 << 20))
        for key in held:
            await runtime.relay.gate.configure(key, paused=False)
        await received_at_least(partner, "/slow", 3)
        await asyncio.sleep(0.5)
        assert len(partner.received("/slow")) == 3  # the bound
        await asyncio.sleep(1.5)  # set aside after 1-1.25 s; the answers come after 3 s
        assert len(partner.received("/slow")) == 6  # as much again, waiting
        for i in range(9):
            assert (await settled(runtime, f"b-{i}", timeout=20)).status is Status.DELIVERED
        at = sorted(r.at for r in partner.received("/slow"))
        assert at[6] - at[0] > 2.5, at  # the last three after the first answers
        # the room came back with the answers: the last three went together, not one by
        # one as they would with bodies counted and never given back
        assert at[8] - at[6] < 1.0, at
        deadline = time.monotonic() + 10
        while worker._inflight:  # DELIVERED is written a moment before its task ends
            assert time.monotonic() < deadline, "attempts still in flight"
            await asyncio.sleep(0.01)
        assert (worker._body_bytes, worker._waiting_bytes, worker._claims) == (0, 0, {})


async def test_headers_held_in_flight_count_against_the_bound(tmp_path: Path) -> None:
    """Headers are bounded only by the request's 6 MiB, and an attempt holds them until its
    answer as it holds its body: with room for 3 MiB, three attempts with a 1 MiB header
    each go to a partner that never answers, not six (all six, with bodies alone counted)."""
    heads: list[bytes] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0, limit=4 << 20)
    port = server.sockets[0].getsockname()[1]
    try:
        # capped as the pool is: the destination's share is all of the bound
        async with engine(settings(tmp_path / "r.db", shutdown_grace="0.1",
                                   destination_concurrency="256"),
                          body_room=3 << 20) as runtime:
            worker = worker_of(runtime)
            for i in range(6):
                await submit(runtime, f"h-{i}", f"http://127.0.0.1:{port}/hang",
                             headers={"X-Big": str(i) * (1 << 20)}, timeoutSeconds=30)
            deadline = time.monotonic() + 10
            while len(heads) < 3:
                assert time.monotonic() < deadline, "three attempts did not start"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # within the second before they are set aside
            assert len(heads) == 3, len(heads)
            assert worker._body_bytes >= 3 << 20
    finally:
        server.close()


async def test_partners_that_hang_on_big_bodies_do_not_hold_back_the_others(
    tmp_path: Path, partner: Partner
) -> None:
    """The contract: a destination that hangs takes no more than its own maxConcurrency.
    With room for 3 MiB of bodies, four attempts hanging on 1 MiB each held every other
    destination until their answers (12.8 s with the default room and 6 MiB bodies). Their
    bodies now stop counting once they have waited a second, as they leave the pool. (A
    destination capped as the pool is may hold all of the bound.)"""
    async with engine(settings(tmp_path / "r.db", destination_concurrency="256"),
                      body_room=3 << 20) as runtime:
        for i in range(4):
            await submit(runtime, f"h-{i}", partner.url("/slow/6"), destination="hang",
                         body="x" * (1 << 20), timeoutSeconds=10)
        await received_at_least(partner, "/slow", 3)
        message, took = await healthy_one(runtime, partner, destination="ok")
    assert message.status is Status.DELIVERED
    assert took < 3.0, took  # the hanging ones answer after 6 s


@pytest.mark.parametrize("hanging", [3, 7])
async def test_partners_that_hang_on_big_bodies_fewer_than_fill_the_pool_leave_room(
    tmp_path: Path, partner: Partner, hanging: int
) -> None:
    """The defaults scaled down: pool 16, cap 4 (a quarter, as 64 of 256), room for 8 MiB
    of bodies, 1 MiB each. A destination's bodies take at most its cap's share of the room
    (2 MiB), so hanging destinations fill it, waiting ones counted as much again, only at
    eight, as they fill the pool. Without the share three of them, at their caps, held
    12 MiB, and the healthy message waited for their answers (as 3 x 64 x 6 MiB did with
    the defaults)."""
    async with engine(settings(tmp_path / "r.db", concurrency="16",
                               destination_concurrency="4"), body_room=8 << 20) as runtime:
        worker = worker_of(runtime)
        for d in range(hanging):
            for i in range(4):
                await submit(runtime, f"h-{d}-{i}", partner.url("/slow/8"),
                             destination=f"hang-{d}", body="x" * (1 << 20), timeoutSeconds=10)
        await received_at_least(partner, "/slow", 2 * hanging)
        await asyncio.sleep(1.5)  # all set aside as waiting
        assert len(partner.received("/slow")) == 2 * hanging  # two each: their share
        assert max(worker._bytes_of.values()) == 2 << 20
        message, took = await healthy_one(runtime, partner, timeout=15, destination="ok")
    assert message.status is Status.DELIVERED
    assert took < 3.0, took  # the hanging ones answer after 8 s
    assert (worker._body_bytes, worker._bytes_of) == (0, {})


async def test_a_destination_at_its_share_of_bodies_takes_more_as_attempts_end(
    tmp_path: Path, partner: Partner
) -> None:
    """Two 1 MiB bodies fill the share (pool 16, cap 4, room 8 MiB); the next two go as
    soon as the first answers come, not at the next idle wake-up (5 s)."""
    async with engine(settings(tmp_path / "r.db", concurrency="16",
                               destination_concurrency="4"), body_room=8 << 20) as runtime:
        for i in range(4):
            await submit(runtime, f"s-{i}", partner.url("/slow/1"), destination="d",
                         body="x" * (1 << 20))
        for i in range(4):
            assert (await settled(runtime, f"s-{i}", timeout=10)).status is Status.DELIVERED
    at = sorted(r.at for r in partner.received("/slow"))
    assert at[1] - at[0] < 0.5, at  # two by two
    assert at[3] - at[2] < 0.5, at
    assert 0.9 < at[2] - at[0] < 2.0, at  # once the first two have answered


@asynccontextmanager
async def due_bodies(tmp_path: Path, hosts: Sequence[str], each: int) -> AsyncIterator[SqliteQueue]:
    """A SQLite queue with `each` messages of 100,000-byte bodies due for each host's
    destination (`<host>.example:443`); with its document (about 600 bytes, counted too)
    each is about 100.6 KB to a claim's bound."""
    db = SqliteDatabase(tmp_path / "r.db")
    db.open()
    try:
        store = SqliteStore(db)
        for host in hosts:
            for i in range(each):
                await store.create_queued(make_message(
                    f"{host}-{i}", body=b"x" * 100_000, url=f"https://{host}.example/hook"))
        yield SqliteQueue(db)
    finally:
        db.close()


def started_now(message: Message) -> Message | None:
    return message.start_attempt(NOW)


async def test_a_claim_reads_a_destinations_bodies_up_to_its_share(tmp_path: Path) -> None:
    """Each destination's rows stop once its share is read (the last one past it), and the
    claim goes on to the next destination."""
    async with due_bodies(tmp_path, ("a", "b"), 4) as queue:
        room = {"a.example:443": 150_000, "b.example:443": 300_000}
        claims = await queue.claim_started(10, 30.0, lambda key: 10, started_now, 1_000_000,
                                           lambda key: room[key.name])
        taken = Counter(claim.destination for claim in claims)
        assert taken == {"a.example:443": 2, "b.example:443": 3}, taken


async def test_a_claim_reads_bodies_up_to_its_bound(tmp_path: Path) -> None:
    """One message at least, none past the bound after the first (its size is known before
    its body is read); the rest stay due, unleased."""
    async with due_bodies(tmp_path, ("c",), 5) as queue:
        assert len(await queue.claim_started(10, 30.0, None, started_now, 250_000)) == 2
        assert len(await queue.claim_started(10, 30.0, lambda key: 10, started_now, 0)) == 1
        assert len(await queue.claim_started(10, 30.0, None, started_now, None)) == 2  # last


@pytest.mark.parametrize("size", [0, INLINE_BODY_BYTES, INLINE_BODY_BYTES + 1, 3 << 20])
async def test_a_claim_starts_its_messages_with_their_whole_bodies(
    tmp_path: Path, size: int
) -> None:
    """A body over INLINE_BODY_BYTES is left out of the claim's row and read on its own
    once the claim takes it (the row read ahead must not read it): each comes whole, and
    the bound counts it. Counted, the 3 MiB one takes the claim alone."""
    db = SqliteDatabase(tmp_path / "r.db")
    db.open()
    try:
        store = SqliteStore(db)
        bodies = {f"m-{i}": bytes([65 + i]) * size for i in range(3)}
        for message_id, body in bodies.items():
            await store.create_queued(make_message(message_id, body=body))
        claims = await SqliteQueue(db).claim_started(10, 30.0, None, started_now, 1 << 20)
        assert claims, "nothing claimed"
        for claim in claims:
            assert claim.started is not None
            assert claim.started.after.content.body == bodies[claim.key.message_id]
            assert claim.started.after.status is Status.DELIVERING
        assert len(claims) == (1 if size > 1 << 20 else 3)
    finally:
        db.close()


async def test_a_claim_cut_short_by_its_bound_leaves_the_next_turn_to_those_not_read(
    tmp_path: Path,
) -> None:
    """A destination the bound left unread has not been served: the next claim starts with
    it. Marked served all the same, it stayed behind one with a backlog of big bodies until
    that backlog was gone."""
    async with due_bodies(tmp_path, ("a", "b"), 6) as queue:
        read = []
        for _ in range(4):
            claims = await queue.claim_started(10, 30.0, lambda key: 10, started_now, 150_000)
            read.append({claim.destination for claim in claims})
        assert [len(names) for names in read] == [1, 1, 1, 1], read
        assert read[0] != read[1], read
        assert read[2:] == read[:2], read


async def test_a_destination_whose_first_body_would_pass_the_bound_keeps_its_turn(
    tmp_path: Path,
) -> None:
    """A claim that stops before another destination's first row (its body would pass the
    bound) has not served that destination: the next claim starts with it. Marked served,
    it went behind the first destination's backlog claim after claim."""
    db = SqliteDatabase(tmp_path / "r.db")
    db.open()
    try:
        store = SqliteStore(db)
        for host, count, size in (("a", 6, 100_000), ("b", 2, 300_000)):
            for i in range(count):
                await store.create_queued(make_message(
                    f"{host}-{i}", body=b"x" * size, url=f"https://{host}.example/hook"))
        queue = SqliteQueue(db)
        read = []
        for _ in range(3):
            claims = await queue.claim_started(10, 30.0, lambda key: 10, started_now, 250_000,
                                               lambda key: 200_000)  # each one's share
            read.append(sorted(claim.key.message_id for claim in claims))
        assert read[0] == ["a-0", "a-1"], read  # a's share; then b's 300 KB would pass 250
        assert read[1] == ["b-0"], read  # b first now: its body taken, alone
        assert read[2] == ["a-2", "a-3"], read
    finally:
        db.close()


async def test_body_counts_return_to_zero_when_waiting_attempts_are_cut_short(
    tmp_path: Path, partner: Partner
) -> None:
    """Attempts set aside as waiting, abandoned at shutdown (cancelled): their bodies leave
    every count, with nothing left waiting."""
    async with engine(settings(tmp_path / "r.db", shutdown_grace="0.1",
                               destination_concurrency="256"), body_room=3 << 20) as runtime:
        worker = worker_of(runtime)
        for i in range(8):
            await submit(runtime, f"h-{i}", partner.url("/slow/20"), destination=f"d{i % 2}",
                         body="x" * (1 << 20), timeoutSeconds=30)
        await received_at_least(partner, "/slow", 6)
        await asyncio.sleep(0.6)
        assert (len(worker._inflight), len(worker._waiting)) == (6, 3)
        assert (worker._body_bytes, worker._waiting_bytes) == (6 << 20, 3 << 20)
        assert sum(worker._bytes_of.values()) == 6 << 20
    assert (worker._body_bytes, worker._waiting_bytes, worker._bytes_of, worker._waiting,
            worker._claims, worker._inflight) == (0, 0, {}, set(), {}, set())


async def test_a_destination_given_a_larger_cap_takes_that_share_of_bodies(
    tmp_path: Path, partner: Partner
) -> None:
    """The share follows the destination's own cap, as the pool does: one PATCHed from the
    default 4 to 8 (pool 16, room 8 MiB) may hold half the room, 4 bodies of 1 MiB, not
    the default's 2 (README: a partner that can take more gets a larger maxConcurrency)."""
    async with engine(settings(tmp_path / "r.db", concurrency="16",
                               destination_concurrency="4"), body_room=8 << 20) as runtime:
        worker = worker_of(runtime)
        big = DestinationKey("sender-a", "big")
        await runtime.relay.gate.configure(big, max_concurrency=8)
        for i in range(8):
            await submit(runtime, f"g-{i}", partner.url("/slow/4"), destination="big",
                         body="x" * (1 << 20), timeoutSeconds=10)
        await received_at_least(partner, "/slow", 4, within=2)
        await asyncio.sleep(1.5)  # set aside as waiting: still counted in the share
        assert len(partner.received("/slow")) == 4
        assert worker._bytes_of == {big: 4 << 20}


async def test_a_lease_given_back_after_a_fault_does_not_hold_its_body(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails gives its lease back, trying again for as long as the lease lasts
    (180 s) while the store refuses: that needs the lease, not the message's body, which
    the bound on bodies in flight no longer counts."""
    given_back: list[Claim] = []

    async def failing_deliver(self: object, claim: Claim, ticket: object) -> None:
        raise StoreUnavailable("the store is down")

    async def refused(self: object, claim: Claim, due_at: datetime) -> None:
        given_back.append(claim)
        raise StoreUnavailable("still down")

    # on the classes: their instances have slots
    monkeypatch.setattr(service.Relay, "deliver", failing_deliver)
    monkeypatch.setattr(SqliteQueue, "reschedule", refused)
    async with engine(settings(tmp_path / "r.db"), body_room=8 << 20) as runtime:
        worker = worker_of(runtime)
        await submit(runtime, "f-1", partner.url("/ok"), body="x" * (1 << 20))
        deadline = time.monotonic() + 10
        while not given_back:
            assert time.monotonic() < deadline, "the lease was not given back"
            await asyncio.sleep(0.01)
        assert worker._releases  # still trying
        assert [claim.key.message_id for claim in given_back] == ["f-1"]
        assert given_back[0].started is None  # the body is not held by the retries
        assert (worker._body_bytes, worker._bytes_of) == (0, {})


async def test_a_store_that_cannot_write_is_a_warning_each_time_not_a_traceback(
    tmp_path: Path, partner: Partner, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk made every claim fail once a second, each an ERROR with its whole
    traceback (helper-50's audit: 24 in 10 s, on the disk that was full). The store's own
    refusal is named in a warning; delivery goes on once it can write."""
    caplog.set_level(logging.WARNING, logger="notify_relay.worker")
    rt, queue, worker = await unstarted_worker(tmp_path)
    real = queue.claim_started
    refusals: list[int] = []

    async def full(*args: Any) -> Any:
        if len(refusals) < 2:
            refusals.append(1)
            raise StoreUnavailable("the database cannot take writes now: "
                                   "database or disk is full")
        return await real(*args)

    monkeypatch.setattr(queue, "claim_started", full)
    try:
        await submit(rt, "full-1", partner.url("/ok"))
        await worker.start()
        await sent(partner, "ok")
    finally:
        await worker.stop()
        await rt.stop()
    failed = [r for r in caplog.records if r.getMessage().startswith("claiming work failed")]
    assert len(failed) == 2
    assert {(r.levelno, r.exc_info, r.error) for r in failed} == {  # type: ignore[attr-defined]
        (logging.WARNING, None, "the database cannot take writes now: database or disk is full")}
