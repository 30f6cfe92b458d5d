"""uvicorn with the guarded protocol, on 127.0.0.1, in front of tiny apps: what it answers
for uvicorn itself (the concurrency limit), in the contract's shape, and how it writes an
answer (head and body in one write: api/head_with_body.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from notify_relay.api.guarded_protocol import guarded_protocol
from notify_relay.api.head_with_body import HeadWithBody
from tests.raw_http import problem_of, read_answer, status_of
from tests.sockets import free_port
from tests.uvicorn_server import running

pytestmark = pytest.mark.anyio


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(limit: int | None = None, app: Any = slow_app,
                  request_timeout: float = 60.0) -> AsyncIterator[int]:
    port = free_port()
    async with running(uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
            http=guarded_protocol(10.0, request_timeout), limit_concurrency=limit)):
        yield port  # uvicorn's ws left as it is: the protocol itself never upgrades


async def ask(port: int, correlation_id: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    if correlation_id:
        head += b"X-Correlation-Id: " + correlation_id + b"\r\n"
    writer.write(head + b"\r\n")
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return answer


async def test_beyond_the_concurrency_limit_a_problem_with_retry_after() -> None:
    """uvicorn's own answer there was plain text, with no correlation id."""
    async with serving(limit=3) as port:  # uvicorn's count takes in the asking connection
        busy = [asyncio.create_task(ask(port)) for _ in range(2)]
        await asyncio.sleep(0.3)  # both in the app, the third connection is one too many
        refused = await ask(port, b"over-the-limit")
        answered = await asyncio.gather(*busy)
    assert status_of(refused) == 503, refused
    fields, document = problem_of(refused)  # problem+json, its correlation id in both
    assert fields["retry-after"] == "1"
    assert fields["x-correlation-id"] == "over-the-limit"
    assert (document["code"], document["correlationId"]) == ("SYSTEM_ERROR", "over-the-limit")
    assert all(a.startswith(b"HTTP/1.1 200") for a in answered)  # the two in place went on


async def late_body_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts its answer, then takes a while for the body; echoes a POST's body; a path of
    /fail fails after starting."""
    if scope["type"] != "http":
        return
    body = b"ok"
    if scope["method"] == "POST":
        body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    if scope["path"] == "/fail":
        raise RuntimeError("the app fails after starting its answer")
    await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": body})


async def test_an_answer_s_head_goes_out_with_its_body() -> None:
    """One write, one segment: the client's first read has all of it (uvicorn alone sent
    the head at once, and the body in a write of its own)."""
    async with serving(app=late_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first_read = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
    assert first_read.startswith(b"HTTP/1.1 200 OK\r\n"), first_read
    assert first_read.endswith(b"\r\n\r\nok"), first_read


async def test_a_head_request_gets_its_head_and_the_connection_goes_on() -> None:
    """A HEAD answer has no body to carry its head: the head goes when the answer ends."""
    async with serving(app=late_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await read_answer(reader, 0)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        after = await read_answer(reader, 2)
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert head.endswith(b"content-length: 2\r\n\r\n"), head
    assert after.startswith(b"HTTP/1.1 200 OK\r\n"), after
    assert after.endswith(b"\r\n\r\nok"), after


async def test_a_100_continue_is_not_held_for_the_head() -> None:
    async with serving(app=late_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"hello")  # only once told to go on, as a client that waits does
        answer = await read_answer(reader, 5)
        writer.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert answer.endswith(b"\r\n\r\nhello"), answer


async def test_pipelined_requests_get_their_answers_whole_and_in_order() -> None:
    async with serving(app=late_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nfirst"
                     b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nthird")
        answers = [await read_answer(reader, n) for n in (5, 2, 5)]
        writer.close()
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in answers] == [b"first", b"ok", b"third"]
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers), answers


async def test_an_app_failing_after_its_head_still_sends_the_head_then_closes() -> None:
    """The held head is written when uvicorn closes the connection, as it was before."""
    async with serving(app=late_body_app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /fail HTTP/1.1\r\nHost: localhost\r\n\r\n")
        everything = await asyncio.wait_for(reader.read(), 5)  # up to the close
        writer.close()
    assert everything.startswith(b"HTTP/1.1 200 OK\r\n"), everything
    assert everything.endswith(b"content-length: 2\r\n\r\n"), everything


async def test_answered_requests_leave_no_reference_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head's transport held its cycle and the cycle held it: every request's cycle
    waited for the cyclic garbage collector. Counted with that collector off."""
    cycles: list[weakref.ref[Any]] = []
    install = HeadWithBody.install

    def recording(cycle: Any) -> None:
        cycles.append(weakref.ref(cycle))
        install(cycle)

    monkeypatch.setattr(HeadWithBody, "install", recording)
    gc.collect()
    gc.disable()
    try:
        async with serving(app=late_body_app) as port:
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"ok")
                writer.close()
                await writer.wait_closed()
            for _ in range(40):  # until the server's side of each connection is gone
                alive = sum(ref() is not None for ref in cycles)
                if not alive:
                    break
                await asyncio.sleep(0.05)
    finally:
        gc.enable()
    assert len(cycles) == 5
    assert alive == 0, f"{alive} of 5 cycles still referenced"


async def answer_early_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Starts its answer, then reads the body, which never comes whole."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_request_late_after_its_answer_began_gets_that_head_then_the_close() -> None:
    """Its request time out once its answer has begun: the connection closes (no 408 can
    follow an answer), and the head held for the body goes out first."""
    async with serving(app=answer_early_app, request_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nhalf")
        everything = await asyncio.wait_for(reader.read(), 5)  # up to the close
        writer.close()
    assert everything.startswith(b"HTTP/1.1 200 OK\r\n"), everything
    assert everything.endswith(b"content-length: 2\r\n\r\n"), everything


async def test_what_follows_an_upgrade_request_is_not_read() -> None:
    """A client that asked for a WebSocket may send its first frame before the answer. Read
    as HTTP, those bytes were unparsable, and the refusal closed the connection before the
    request's own answer (a slow one here); now they are not read, and the answer comes,
    with `Connection: close`."""
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        await asyncio.sleep(0.2)  # the app is answering (it takes 1 s)
        writer.write(b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")  # a masked "Hello"
        answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        writer.close()
    assert status_of(answer) == 200, answer
    assert b"\r\nconnection: close\r\n" in answer.lower()
    assert answer.endswith(b"ok")
