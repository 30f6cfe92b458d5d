"""Refused requests and failed attempts leave nothing in a reference cycle (cycles.py): their
bodies (up to 6 MiB) go when they are answered, not when the collector next runs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from notify_relay.adapters.http import HttpDeliverer
from notify_relay.adapters.http1 import Answer, Connection
from notify_relay.api.app import create_app
from notify_relay.bootstrap import build_embedded
from notify_relay.config import load
from notify_relay.cycles import release_frames
from notify_relay.domain.network import NetworkPolicy, parse_networks
from notify_relay.domain.retry import ErrorKind
from notify_relay.ports import OutboundRequest
from tests.partner import Partner
from tests.sockets import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def cycle_garbage() -> Iterator[Callable[[], list[object]]]:
    """With the collector off meanwhile: the objects that sit in reference cycles made
    since the last call."""
    def collect() -> list[object]:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            return list(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    gc.collect()
    gc.disable()
    try:
        yield collect
    finally:
        gc.enable()


@pytest.fixture
def cycle_frames(cycle_garbage: Callable[[], list[object]]) -> Callable[[], list[str]]:
    """The functions whose frames sit in reference cycles made since the last call."""
    return lambda: [o.f_code.co_name for o in cycle_garbage() if isinstance(o, types.FrameType)]


class Body:
    """Stands for a request body (bytes take no weak reference)."""


def test_release_frames_frees_what_a_raised_exceptions_frames_held() -> None:
    held: list[weakref.ref[Body]] = []

    def fail() -> None:
        body = Body()
        held.append(weakref.ref(body))
        error = ValueError("refused")  # this frame holds its own exception: a cycle
        try:
            raise KeyError("first")
        except KeyError:
            raise error from None  # and a context, whose frames are cleared too

    gc.disable()
    try:
        try:
            fail()
        except ValueError as exc:
            caught = exc
        assert held[0]() is not None  # kept by the cycle, with the collector off
        release_frames(caught)
        del caught
        assert held[0]() is None
    finally:
        gc.enable()


async def test_a_submission_refused_by_the_route_leaves_no_cycle(
        tmp_path: Path, cycle_frames: Callable[[], list[str]]) -> None:
    runtime = build_embedded(load({"db": str(tmp_path / "r.db")}, environ={}))
    app = create_app(runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            bodies = [b'{"messageId": "m", "body": "' + b"a" * 1000,  # not JSON
                      b'{"messageId": "m y", "targetUrl": "https://p.example/"}']  # invalid
            for body in bodies:
                await c.post("/v1/messages", content=body,  # the first of each kind
                             headers={"Content-Type": "application/json"})  # warms up
            cycle_frames()
            for body in bodies:
                answer = await c.post("/v1/messages", content=body,
                                      headers={"Content-Type": "application/json"})
                assert answer.status_code == 400
            assert cycle_frames() == []


async def test_an_attempt_without_an_answer_leaves_no_cycle(
        cycle_frames: Callable[[], list[str]]) -> None:
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])))
    await deliverer.open()
    try:
        request = OutboundRequest(f"http://127.0.0.1:{free_port()}/h", "POST", [],
                                  b"a" * 1000, 5.0)  # a closed port: refused
        await deliverer.send(request)  # the connector's first use makes lasting objects
        cycle_frames()
        result = await deliverer.send(request)
        assert cycle_frames() == []
    finally:
        await deliverer.close()
    assert result.error_kind is ErrorKind.CONNECTION


async def test_delivered_attempts_leave_no_answer_in_a_cycle(
        partner: Partner, cycle_garbage: Callable[[], list[object]]) -> None:
    """http1.py's parser refers back to its answer: the answer lets go of it once settled,
    so each delivery is freed when it ends, not by the collector."""
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])))
    await deliverer.open()
    try:
        cycle_garbage()
        results = [await deliverer.send(OutboundRequest(partner.url(f"/ok/{i}"), "POST", [],
                                                        b"a" * 100, 5.0)) for i in range(5)]
        kept = [type(o).__name__ for o in cycle_garbage() if isinstance(o, Answer | Connection)]
    finally:
        await deliverer.close()
    assert [r.status_code for r in results] == [200] * 5
    assert kept == []


@pytest.mark.parametrize("reply", [
    b"", b"NOT HTTP\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", None],
    ids=["dropped", "invalid", "cut", "timeout"])
async def test_an_attempt_that_fails_on_a_connection_leaves_no_cycle(
        reply: bytes | None, cycle_frames: Callable[[], list[str]]) -> None:
    """The connection closes with no answer, a garbled one, or half a body, or nothing
    comes before the timeout: what the attempt went through (its frames, the answer's
    future, the request's body) goes when it ends."""
    handlers: list[asyncio.Task[None]] = []
    ended = asyncio.Event()

    async def answer_and_close(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await reader.readuntil(b"\r\n\r\n")
        if reply is None:
            await ended.wait()  # past the attempt's timeout
        writer.write(reply or b"")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    port = free_port()
    listener = await asyncio.start_server(answer_and_close, "127.0.0.1", port)
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])))
    await deliverer.open()
    try:
        request = OutboundRequest(f"http://127.0.0.1:{port}/h", "POST", [], b"a" * 1000,
                                  0.2 if reply is None else 5.0)
        await deliverer.send(request)
        cycle_frames()
        result = await deliverer.send(request)
        assert cycle_frames() == []
    finally:
        ended.set()
        await asyncio.gather(*handlers)
        await deliverer.close()
        listener.close()
    assert result.error_kind in (ErrorKind.CONNECTION, ErrorKind.TIMEOUT) or (
        result.status_code == 200)


@pytest.mark.parametrize(("method", "own_http1"),
                         [("POST", True), ("PUT", True), ("PUT", False)])
async def test_a_request_sent_again_after_a_dropped_kept_connection_leaves_no_cycle(
        method: str, own_http1: bool, cycle_garbage: Callable[[], list[object]]) -> None:
    """A kept connection the partner drops under a keyed POST (or a PUT, either way): the
    request goes again on a new one (http.py), and the first try's frames, answer and body
    go at once."""
    async def answer_then_drop(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            for on_connection in (1, 2):  # answers the first request, drops the second
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if on_connection == 1:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(answer_then_drop, "127.0.0.1", port)
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])),
                              own_http1=own_http1)
    await deliverer.open()
    request = OutboundRequest(f"http://127.0.0.1:{port}/h", method,
                              [("Idempotency-Key", "sender-a:order-1")], b"a" * 1000, 5.0)
    try:
        first = await deliverer.send(request)  # a connection to drop the next one
        cycle_garbage()
        result = await deliverer.send(request)  # dropped, then sent again: answered
        kept = [type(o).__name__ if isinstance(o, Answer) else o.f_code.co_name
                for o in cycle_garbage() if isinstance(o, Answer | types.FrameType)]
    finally:
        await deliverer.close()
        listener.close()
    assert (first.status_code, result.status_code, result.sent_twice) == (200, 200, True)
    assert kept == []


async def test_a_refused_connect_leaves_no_answer_in_a_cycle(
        cycle_garbage: Callable[[], list[object]]) -> None:
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])))
    await deliverer.open()
    request = OutboundRequest(f"http://127.0.0.1:{free_port()}/h", "POST", [], b"a", 5.0)
    try:
        cycle_garbage()
        result = await deliverer.send(request)
        kept = [type(o).__name__ for o in cycle_garbage() if isinstance(o, Answer)]
    finally:
        await deliverer.close()
    assert result.error_kind is ErrorKind.CONNECTION
    assert kept == []


async def test_a_certificate_refused_leaves_no_cycle(
        cycle_frames: Callable[[], list[str]]) -> None:
    """asyncio's TLS frames in the error's traceback hold its protocol and a 256 KiB
    buffer: a partner with a bad certificate fails at every attempt."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]

    def serve() -> None:  # in a thread, blocking: asyncio's server makes cycles of its own
        while True:
            try:
                accepted, _ = listening.accept()
            except OSError:
                return  # closed: the test is over
            with contextlib.suppress(OSError), accepted:
                context.wrap_socket(accepted, server_side=True).close()

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])))
    await deliverer.open()
    try:
        request = OutboundRequest(f"https://127.0.0.1:{port}/h", "POST", [], b"a", 5.0)
        await deliverer.send(request)
        cycle_frames()
        result = await deliverer.send(request)
        assert cycle_frames() == []
    finally:
        await deliverer.close()
        listening.shutdown(socket.SHUT_RDWR)
        listening.close()
        serving.join(timeout=5)
    assert "certificate verify failed" in (result.error or ""), result
