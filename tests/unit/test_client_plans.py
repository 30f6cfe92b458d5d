"""The client's shared plans (notify_relay_client._base) driven by hand: every request,
retry decision and wait is visible as a step, with no socket and no sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from notify_relay_client import (
    ApiError,
    AuthenticationError,
    BatchItemError,
    ConflictError,
    ForbiddenError,
    IdempotencyConflictError,
    InvalidStateError,
    MessageStatus,
    NotFoundError,
    RateLimitedError,
    Retries,
    ServerError,
    Submission,
    SubmitResult,
    TransportError,
    ValidationError,
    WaitTimeoutError,
)
from notify_relay_client._base import (
    Call,
    Core,
    Plan,
    Reply,
    Sleep,
    Step,
    parse_retry_after,
    retry_delay,
)

FAST = Retries(max_retries=4, initial_delay=0.1, max_delay=1.0)


def respond(call: Call, status: int, body: Any = None, headers: dict[str, str] | None = None
            ) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers,
                          request=httpx.Request(call.method, "http://relay" + call.path))


def drive(plan: Plan[Any], answer: Callable[[Call], Reply]) -> tuple[Any, list[Step]]:
    """Run a plan: each Call answered by `answer`, each Sleep recorded and skipped."""
    steps: list[Step] = []
    reply: Reply = None
    try:
        while True:
            step = plan.send(reply)
            steps.append(step)
            reply = answer(step) if isinstance(step, Call) else None
    except StopIteration as done:
        return done.value, steps


def scripted(*replies: Callable[[Call], Reply]) -> Callable[[Call], Reply]:
    remaining = list(replies)
    return lambda call: remaining.pop(0)(call)


def accepted(call: Call, status: int = 202) -> httpx.Response:
    body = call.json
    return respond(call, status, {"messageId": body["messageId"], "senderId": "s",
                                  "status": "QUEUED", "stored": True, "queued": True,
                                  "duplicate": status == 200, "correlationId": "c-1"})


def problem(status: int, code: str, **extra: Any) -> Callable[[Call], httpx.Response]:
    headers = extra.pop("headers", None)
    return lambda call: respond(call, status, {
        "type": "about:blank", "title": "t", "status": status, "detail": f"{code} detail",
        "code": code, "correlationId": "corr-9", **extra}, headers)


def refused(call: Call) -> Reply:
    return httpx.ConnectError("connection refused")


def cut(call: Call) -> Reply:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def message_json(status: str, message_id: str = "m-1") -> dict[str, Any]:
    return {"messageId": message_id, "senderId": "s", "status": status,
            "targetUrl": "http://p/ok", "method": "POST", "headers": {},
            "correlationId": "c", "timestamp": None, "destination": "p:80",
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:01.000Z",
            "nextAttemptAt": None, "deliveredAt": None, "attemptCount": 1, "maxAttempts": 3,
            "lastStatusCode": None, "lastError": None, "attempts": []}


# --- retry decisions: one table -----------------------------------------------------------

def _response(status: int, retry_after: str | None = None) -> httpx.Response:
    return httpx.Response(status, headers={"Retry-After": retry_after} if retry_after else {})


@pytest.mark.parametrize(("reply", "retry", "expected"), [
    (_response(503), 0, "backoff"),
    (_response(500), 0, "backoff"),
    (_response(502), 3, "backoff"),
    (_response(504), 0, "backoff"),
    (_response(408), 0, "backoff"),
    (_response(429), 0, "backoff"),
    (_response(429, "3"), 0, 3.0),
    (_response(503, "0"), 0, 0.0),
    (_response(429, "120"), 0, None),  # longer than max_retry_after: the caller decides
    (_response(503), 4, None),  # retries spent
    (_response(501), 0, None),
    (_response(400), 0, None),
    (_response(409), 0, None),
    (_response(404), 0, None),
    (_response(200), 0, None),
    (httpx.ConnectError("refused"), 0, "backoff"),
    (httpx.ReadTimeout("slow"), 1, "backoff"),
    (httpx.ReadError("reset"), 0, "backoff"),
    (httpx.RemoteProtocolError("cut"), 0, "backoff"),
    (httpx.UnsupportedProtocol("ftp"), 0, None),
    (httpx.LocalProtocolError("ours"), 0, None),
])
def test_retry_delay(reply: Reply, retry: int, expected: object) -> None:
    retries = Retries(max_retries=4, initial_delay=0.5, max_delay=8.0, max_retry_after=60)
    delay = retry_delay(reply, retry, retries, rand=lambda: 1.0)
    if expected == "backoff":  # full jitter at its top: initial * 2**retry, capped
        assert delay == min(8.0, 0.5 * 2 ** retry)
    else:
        assert delay == expected


def test_backoff_is_full_jitter_and_capped() -> None:
    retries = Retries(max_retries=10, initial_delay=0.5, max_delay=8.0)
    assert retry_delay(_response(503), 9, retries, rand=lambda: 0.0) == 0.0
    assert retry_delay(_response(503), 9, retries, rand=lambda: 0.999) == pytest.approx(7.992)


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == 7.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True),
                             now=now.timestamp()) == 0.0
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("1.5") == 1.5
    for bad in ("-1", "soon", "", "nan", "inf"):
        assert parse_retry_after(bad) is None
    assert parse_retry_after(None) is None


# --- submit -------------------------------------------------------------------------------

def test_submit_generates_one_message_id_kept_across_retries() -> None:
    # Given a server that fails twice, then accepts
    plan = Core(retries=FAST).submit(Submission("http://p/ok", body={"a": 1}))
    result, steps = drive(plan, scripted(problem(503, "SYSTEM_ERROR"), cut, accepted))
    # Then the three tries carried one generated id, with a wait between each
    calls = [s for s in steps if isinstance(s, Call)]
    assert len(calls) == 3
    assert len({c.json["messageId"] for c in calls}) == 1
    assert [type(s) for s in steps] == [Call, Sleep, Call, Sleep, Call]
    assert isinstance(result, SubmitResult)
    assert result.message_id == calls[0].json["messageId"]
    assert calls[0].json == {"messageId": result.message_id, "targetUrl": "http://p/ok",
                             "method": "POST", "body": {"a": 1}}


def test_submit_body_fields_and_sender() -> None:
    when = datetime(2026, 11, 28, 23, 59, 59, 123000, tzinfo=UTC)
    plan = Core(sender_id="orders").submit(Submission(
        "http://p/ok", body="hi", method="PUT", headers={"X-A": "1"}, message_id="m-1",
        destination="partner", retry_policy=None, timeout_seconds=5, deliver_at=when,
        callback_url="http://cb/x", timestamp="2026-01-01T00:00:00Z"), "corr-1")
    _, steps = drive(plan, accepted)
    call = steps[0]
    assert isinstance(call, Call)
    assert call.headers == {"X-Correlation-Id": "corr-1"}
    assert call.json == {"messageId": "m-1", "targetUrl": "http://p/ok", "method": "PUT",
                         "senderId": "orders", "headers": {"X-A": "1"}, "body": "hi",
                         "destination": "partner", "timeoutSeconds": 5,
                         "deliverAt": "2026-11-28T23:59:59.123Z", "callbackUrl": "http://cb/x",
                         "timestamp": "2026-01-01T00:00:00Z"}


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        drive(Core().submit(Submission("http://p", deliver_at=datetime(2026, 1, 1))), accepted)


def test_retry_after_is_honoured() -> None:
    plan = Core(retries=FAST).submit(Submission("http://p/ok", message_id="m"))
    _, steps = drive(plan, scripted(problem(429, "RATE_LIMITED", headers={"Retry-After": "2"}),
                                    accepted))
    assert steps[1] == Sleep(2.0)


def test_too_long_retry_after_raises_at_once() -> None:
    plan = Core(retries=FAST).submit(Submission("http://p/ok", message_id="m"))
    with pytest.raises(RateLimitedError) as raised:
        drive(plan, problem(429, "RATE_LIMITED", headers={"Retry-After": "3600"}))
    assert raised.value.retry_after == 3600.0
    assert (raised.value.status, raised.value.code) == (429, "RATE_LIMITED")


def test_retries_spent_raise_server_error() -> None:
    plan = Core(retries=FAST).submit(Submission("http://p/ok", message_id="m"))
    with pytest.raises(ServerError) as raised:
        drive(plan, problem(503, "SYSTEM_ERROR"))
    assert raised.value.correlation_id == "corr-9"


def test_no_answer_raises_transport_error() -> None:
    plan = Core(retries=FAST).get("m")
    with pytest.raises(TransportError, match="5 tries") as raised:
        drive(plan, refused)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "VALIDATION_ERROR", ValidationError),
    (413, "PAYLOAD_TOO_LARGE", ValidationError),
    (415, "UNSUPPORTED_MEDIA_TYPE", ValidationError),
    (422, "TARGET_NOT_ALLOWED", ValidationError),
    (401, "UNAUTHENTICATED", AuthenticationError),
    (403, "FORBIDDEN", ForbiddenError),
    (404, "NOT_FOUND", NotFoundError),
    (409, "IDEMPOTENCY_CONFLICT", IdempotencyConflictError),
    (409, "INVALID_STATE", InvalidStateError),
    (418, "TEAPOT", ApiError),
])
def test_typed_errors(status: int, code: str, kind: type[ApiError]) -> None:
    errors = [{"field": "targetUrl", "message": "bad"}] if status == 400 else None
    with pytest.raises(kind) as raised:
        drive(Core(retries=FAST).get("m"), problem(status, code, errors=errors))
    error = raised.value
    assert (error.status, error.code, error.detail, error.correlation_id) == (
        status, code, f"{code} detail", "corr-9")
    if errors:
        assert [(e.field, e.message) for e in error.errors] == [("targetUrl", "bad")]


def test_an_answer_that_is_not_problem_details() -> None:
    # e.g. API Gateway refusing a signature: {"message": ...}, no code
    with pytest.raises(ForbiddenError) as raised:
        drive(Core().get("m"), lambda call: respond(call, 403, {"message": "bad signature"},
                                                     {"X-Correlation-Id": "gw-1"}))
    assert (raised.value.code, raised.value.detail) == ("HTTP_403", "bad signature")
    assert raised.value.correlation_id == "gw-1"


# --- retry and cancel: a 409 after a try that may have worked -----------------------------

def test_retry_409_after_an_unanswered_try_reads_the_message() -> None:
    # Given a retry whose first try got no answer (but worked) and second got 409
    plan = Core(retries=FAST).retry("m-1")
    result, steps = drive(plan, scripted(
        cut, problem(409, "INVALID_STATE"),
        lambda call: respond(call, 200, message_json("QUEUED"))))
    # Then the message was read, and it is queued again: the retry is taken as done
    calls = [s for s in steps if isinstance(s, Call)]
    assert [(c.method, c.path) for c in calls] == [
        ("POST", "/v1/messages/m-1/retry"), ("POST", "/v1/messages/m-1/retry"),
        ("GET", "/v1/messages/m-1")]
    assert result.status is MessageStatus.QUEUED


def test_retry_409_at_first_try_is_raised() -> None:
    with pytest.raises(InvalidStateError):
        drive(Core(retries=FAST).retry("m-1"), problem(409, "INVALID_STATE"))


def test_cancel_409_after_doubt_but_not_cancelled_is_raised() -> None:
    plan = Core(retries=FAST).cancel("m-1")
    with pytest.raises(ConflictError):
        drive(plan, scripted(problem(503, "SYSTEM_ERROR"), problem(409, "INVALID_STATE"),
                             lambda call: respond(call, 200, message_json("DELIVERED"))))


def test_cancel_409_after_doubt_and_cancelled_returns_it() -> None:
    plan = Core(retries=FAST).cancel("m-1")
    result, _ = drive(plan, scripted(cut, problem(409, "INVALID_STATE"),
                                     lambda call: respond(call, 200, message_json("CANCELLED"))))
    assert result.status is MessageStatus.CANCELLED


def test_429_is_no_doubt() -> None:
    plan = Core(retries=FAST).retry("m-1")
    with pytest.raises(InvalidStateError):
        drive(plan, scripted(problem(429, "RATE_LIMITED", headers={"Retry-After": "0"}),
                             problem(409, "INVALID_STATE")))


# --- batch, paths, wait_for ---------------------------------------------------------------

def test_batch_ids_are_made_before_the_first_try() -> None:
    plan = Core(sender_id="s", retries=FAST).submit_batch(
        [Submission("http://p/1"), Submission("http://p/2", message_id="mine")])

    def answer(call: Call) -> httpx.Response:
        items = call.json["messages"]
        return respond(call, 200, {"items": [
            {**accepted(Call("POST", "/", json=items[0])).json(), "httpStatus": 202},
            {"httpStatus": 409, "code": "IDEMPOTENCY_CONFLICT", "detail": "other content",
             "messageId": "mine", "type": "about:blank", "title": "Conflict", "status": 409},
        ]})

    results, steps = drive(plan, scripted(refused, answer))
    first, second = (s for s in steps if isinstance(s, Call))
    assert first.json == second.json
    assert [m["senderId"] for m in first.json["messages"]] == ["s", "s"]
    ok, conflict = results
    assert isinstance(ok, SubmitResult)
    assert ok.message_id == first.json["messages"][0]["messageId"]
    assert isinstance(conflict, BatchItemError)
    assert (conflict.http_status, conflict.code, conflict.message_id) == (
        409, "IDEMPOTENCY_CONFLICT", "mine")
    assert isinstance(conflict.to_exception(), IdempotencyConflictError)


def test_ids_are_one_path_segment() -> None:
    _, steps = drive(Core(sender_id="s").get("a/b:c@d"),
                     lambda call: respond(call, 200, message_json("QUEUED")))
    assert steps[0] == Call("GET", "/v1/messages/a%2Fb%3Ac%40d", params={"senderId": "s"})
    seen: list[Call] = []

    def not_found(call: Call) -> httpx.Response:
        seen.append(call)
        return respond(call, 404, {"code": "NOT_FOUND", "detail": "no such destination"})

    with pytest.raises(NotFoundError):
        drive(Core().destination(".."), not_found)
    assert seen == [Call("GET", "/v1/destinations/%2E%2E", params={})]


def test_wait_for_polls_until_final() -> None:
    statuses = iter(["QUEUED", "DELIVERING", "RETRYING", "DELIVERED"])
    plan = Core().wait_for("m-1", 30, None)
    result, steps = drive(plan, lambda call: respond(call, 200, message_json(next(statuses))))
    assert result.status is MessageStatus.DELIVERED
    sleeps = [s.seconds for s in steps if isinstance(s, Sleep)]
    assert sleeps == pytest.approx([0.1, 0.15, 0.225])


def test_wait_for_given_statuses_and_timeout() -> None:
    plan = Core().wait_for("m-1", 30, {"RETRYING"})
    result, _ = drive(plan, lambda call: respond(call, 200, message_json("RETRYING")))
    assert result.status is MessageStatus.RETRYING
    with pytest.raises(WaitTimeoutError) as raised:
        drive(Core().wait_for("m-1", 0, None),
              lambda call: respond(call, 200, message_json("QUEUED")))
    assert isinstance(raised.value, TimeoutError)
    assert raised.value.message.status is MessageStatus.QUEUED


def replayed(call: Call) -> httpx.Response:
    return respond(call, 202, {"replayed": 3, "more": False})


def test_replay_is_retried_only_when_the_server_surely_did_not_act() -> None:
    """A second replay after a lost answer would replay up to `limit` more."""
    calls = lambda steps: sum(isinstance(s, Call) for s in steps)  # noqa: E731
    result, steps = drive(Core(retries=FAST).replay("d", None, None, 10),
                          scripted(refused, problem(429, "RATE_LIMITED"), replayed))
    assert (result.replayed, calls(steps)) == (3, 3)
    for doubtful in (cut, problem(503, "SYSTEM_ERROR")):
        plan = Core(retries=FAST).replay("d", None, None, 10)
        with pytest.raises((TransportError, ServerError)):
            drive(plan, scripted(doubtful, replayed))
