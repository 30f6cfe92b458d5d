"""POST /v1/messages answered below ASGI (api/plain_submit.py), on uvicorn with the guarded
protocol on 127.0.0.1, against the same app served without it: the same requests give the
same bytes (but for the date), the same counts and log lines; what is not plain goes to the
app; pipelining, a late body, Connection: close and 100-continue keep uvicorn's rules."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.adapters.prometheus import PrometheusObserver
from notify_relay.api import fast_submit, plain_submit
from notify_relay.api.app import create_app
from notify_relay.api.guarded_protocol import guarded_protocol
from notify_relay.auth import Authenticator
from notify_relay.bootstrap import NoDelivery
from notify_relay.domain.ratelimit import RateLimiter
from notify_relay.gate import Gate
from notify_relay.runtime import Runtime
from notify_relay.service import Relay
from tests.raw_http import read_answer, status_of
from tests.sockets import free_port
from tests.unit.test_fast_submit import REQUESTS
from tests.uvicorn_server import running

pytestmark = pytest.mark.anyio
OK = b'{"messageId": "p1", "targetUrl": "https://partner.example/hook"}'


def runtime(keys: bool = True, limited: bool = True) -> Runtime:
    store = MemoryStore()
    metrics = PrometheusObserver()
    return Runtime(Relay(store, MemoryQueue(), NoDelivery(), Gate(store.destinations),
                         observer=metrics),
                   auth=Authenticator.from_keys({"key-a": "team-a"} if keys else {}),
                   metrics=metrics,
                   limiter=RateLimiter(rate_per_second=0.001, burst=7) if limited else None)


@asynccontextmanager
async def serving(rt: Runtime, door: bool) -> AsyncIterator[int]:
    """The app on 127.0.0.1; `door`: with submissions answered below ASGI."""
    app = create_app(rt)
    port = free_port()
    async with running(uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
            server_header=False, access_log=False, http=guarded_protocol(
                10.0, 60.0, app.state.plain_submissions if door else None))):
        yield port


def post(body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/messages",
         ) -> bytes:
    fields = {"Host": "localhost", "Content-Type": "application/json",
              "Content-Length": str(len(body)), **(headers or {})}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


def undated(answer: bytes) -> bytes:
    """The answer, its date (which uvicorn adds) masked."""
    return b"\r\n".join(b"date: (masked)" if line.startswith(b"date: ") else line
                        for line in answer.split(b"\r\n"))


async def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Each request on one kept connection, each answer read before the next is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = []
        for request in requests:
            writer.write(request)
            answers.append(await read_answer(reader))
        return answers
    finally:
        writer.close()


def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many submissions each door judged: the protocol's and FastSubmit's."""
    judged = {"protocol": 0, "asgi": 0}
    for module, name in ((plain_submit, "protocol"), (fast_submit, "asgi")):
        real = module.judge

        def spy(*args: Any, real: Callable[..., Any] = real, name: str = name) -> Any:
            judged[name] += 1
            return real(*args)

        monkeypatch.setattr(module, "judge", spy)
    return judged


def as_sent(n: int, headers: dict[str, str], body: Any) -> bytes:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return post(content, {**headers, "X-Correlation-Id": f"cid-{n}"})


async def test_below_asgi_the_same_answers_counts_and_lines_as_through_the_app(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Accepted, duplicate, conflict, each refusal of the route (keys, validation, JSON,
    rate): byte for byte, but for the date."""
    judged = counting(monkeypatch)
    requests = [as_sent(n, headers, body) for n, (headers, body) in enumerate(REQUESTS)]
    results = []
    for door in (True, False):
        rt = runtime()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="notify_relay"):
            async with serving(rt, door) as port:
                answers = await exchange(port, *requests)
        assert rt.metrics is not None
        lines = [(r.name, r.getMessage(), getattr(r, "status", None),
                  getattr(r, "correlationId", None)) for r in caplog.records
                 if r.name.startswith("notify_relay")]  # uvicorn's lines name its port
        counts = [line for line in rt.metrics.render_submissions().splitlines()
                  if b"_created" not in line]  # when each series began
        results.append(([undated(a) for a in answers], counts, lines))
        if door:  # every request was judged there, once, and none again by FastSubmit
            assert judged == {"protocol": len(REQUESTS), "asgi": 0}
    assert [status_of(a) for a in results[0][0]] == [
        202, 200, 409, 202, 403, 401, 401, 422, 400, 400, 400, 400, 400, 202, 202, 429]
    for n, (mine, theirs) in enumerate(zip(results[0][0], results[1][0], strict=True)):
        assert mine == theirs, f"request {n}: {REQUESTS[n]}"
    assert results[0][1] == results[1][1]  # submissions by result and status
    assert b'notify_relay_submissions_total{code="409",result="rejected"} 1.0' in results[0][1]
    assert results[0][2] == results[1][2]
    # without the door, the two without a valid key stop at the app's body guard
    assert judged == {"protocol": len(REQUESTS), "asgi": len(REQUESTS) - 2}


async def test_without_keys_the_guard_still_refuses_other_hosts_and_origins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    judged = counting(monkeypatch)
    requests = [post(OK, {"X-Correlation-Id": "a"}),
                post(OK, {"Host": "evil.example", "X-Correlation-Id": "b"}),
                post(OK, {"Origin": "http://evil.example", "X-Correlation-Id": "c"}),
                post(OK, {"Origin": "http://localhost", "X-Correlation-Id": "d"})]
    answers = []
    for door in (True, False):
        async with serving(runtime(keys=False), door) as port:
            answers.append([undated(a) for a in await exchange(port, *requests)])
    assert [status_of(a) for a in answers[0]] == [202, 403, 403, 200]
    assert answers[0] == answers[1]
    assert judged["protocol"] == 2  # the refused two went to the app's guard


async def test_pipelined_submissions_are_answered_whole_and_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    judged = counting(monkeypatch)
    async with serving(runtime(keys=False), door=True) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        second = OK.replace(b"p1", b"p2")
        writer.write(post(OK) + post(second) + b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     + post(OK))
        answers = [await read_answer(reader) for _ in range(4)]
        writer.close()
    assert [status_of(a) for a in answers] == [202, 202, 200, 200]
    assert [json.loads(a.split(b"\r\n\r\n", 1)[1]).get("messageId") for a in answers] == [
        "p1", "p2", None, "p1"]
    assert judged["protocol"] == 3


async def test_a_body_that_comes_after_its_head_is_read_by_the_app(
        monkeypatch: pytest.MonkeyPatch) -> None:
    judged = counting(monkeypatch)
    async with serving(runtime(keys=False), door=True) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = post(OK)
        head, _, body = request.partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        await asyncio.sleep(0.2)
        writer.write(body)
        answer = await read_answer(reader)
        writer.write(post(OK))  # a plain one on the same connection after it
        again = await read_answer(reader)
        writer.close()
    assert (status_of(answer), status_of(again)) == (202, 200)
    assert judged == {"protocol": 1, "asgi": 1}


async def test_connection_close_and_100_continue_keep_uvicorn_s_rules() -> None:
    async with serving(runtime(keys=False), door=True) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(OK, {"Connection": "close"}))
        closing = await read_answer(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head, _, body = post(OK.replace(b"p1", b"p2"), {"Expect": "100-continue"}
                             ).partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
            b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(body)
        continued = await read_answer(reader)
        writer.close()
    assert status_of(closing) == 202
    assert b"\r\nconnection: close\r\n" in closing
    assert status_of(continued) == 202


async def test_an_unexpected_failure_is_a_problem_with_its_correlation_id(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    async def failing(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Relay, "submit", failing)
    answers = []
    for door in (True, False):
        rt = runtime(keys=False)
        caplog.clear()
        async with serving(rt, door) as port:
            answers.append(undated((await exchange(port, post(OK, {"X-Correlation-Id": "f"}),
                                                   ))[0]))
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
                and r.name.startswith("notify_relay")] == ["unexpected failure"]
    assert status_of(answers[0]) == 500
    assert b'"code":"SYSTEM_ERROR","correlationId":"f"' in answers[0]
    assert answers[0] == answers[1]


def nested(message_id: str, depth: int) -> bytes:
    return (b'{"messageId": "' + message_id.encode() + b'", "targetUrl": '
            b'"https://partner.example/hook", "body": ' + b"[" * depth + b"]" * depth + b"}")


async def test_a_deeply_nested_body_is_judged_by_the_app_whole_or_in_pieces(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """How deep the parser goes depends on how deep in the stack it runs: judged below the
    app's layers, a body nested 974 levels was a 202 sent whole and a 400 sent in two
    pieces, which the app's layers read (helper-67)."""
    judged = counting(monkeypatch)
    answers = []
    async with serving(runtime(keys=False, limited=False), door=True) as port:
        for depth in (890, 940, 970, 975, 980, 1000, 5000):
            request = post(nested(f"d{depth}", depth))
            head, _, body = request.partition(b"\r\n\r\n")
            whole = (await exchange(port, request))[0]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b"\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(body)
            split = await read_answer(reader)
            writer.close()
            answers.append((depth, status_of(whole), status_of(split)))
    assert all(whole in (202, 400) for _, whole, _ in answers), answers
    # the second of each pair is a duplicate of the first, or refused as it was
    assert [(d, {202: 200}.get(w, w)) for d, w, _ in answers] == [(d, s) for d, _, s in answers]
    assert answers[-1][1] == 400  # 5,000 levels: too deep either way
    assert judged["protocol"] == 1  # 890 levels alone was judged below the layers


async def test_an_idle_kept_connection_holds_no_body() -> None:
    """uvicorn keeps a connection's last request cycle until its next request."""
    import gc

    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    big = OK[:-1] + b', "body": "' + b"x" * 30_000 + b'"}'
    async with serving(runtime(keys=False), door=True) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(big))
        assert status_of(await read_answer(reader)) == 202
        await asyncio.sleep(0.1)
        held = [len(o.body) for o in gc.get_objects() if isinstance(o, RequestResponseCycle)]
        writer.close()
    assert held  # the connection's cycle, kept
    assert max(held) == 0
