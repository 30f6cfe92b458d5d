"""The delivery client against a raw HTTP/1.1 server on 127.0.0.1 that scripts every byte:
what goes on the wire, what is kept of the answer, and how connections are reused.

Every test runs on both ways a request can go: the exchange of its own (http1.py), which
every delivery without `Expect` takes, over TLS or not, and aiohttp's, which one with
`Expect` takes. Where the two differ (a keyed request sent again, a partner's Keep-Alive),
the test says so."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop

from notify_relay.adapters import http1
from notify_relay.adapters.http import EXPECT_CONTINUE_SECONDS, HttpDeliverer, PolicyResolver
from notify_relay.domain.network import NetworkPolicy, parse_networks
from notify_relay.domain.response import BODY_LIMIT
from notify_relay.domain.retry import AttemptResult, ErrorKind
from notify_relay.ports import OutboundRequest
from tests.sockets import free_port

pytestmark = pytest.mark.anyio
LOOPBACK = NetworkPolicy(parse_networks(["127.0.0.0/8"]))
OWN_HTTP1 = {"on": True}  # which way deliverer() sends plain HTTP, set by the fixture


@pytest.fixture(autouse=True, params=[True, False], ids=["http1", "aiohttp"])
def way(request: pytest.FixtureRequest) -> Iterator[bool]:
    OWN_HTTP1["on"] = request.param
    yield request.param
    OWN_HTTP1["on"] = True


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # which connection of the server it came on, from 1

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def answer(status: int = 200, body: bytes = b"ok", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Closing(bytes):
    """Bytes a script sends, then closes the connection."""


# what the server does with a request: the bytes to send (Closing: and then the close), or
# None to close the connection
Script = Callable[[Request, int], Awaitable[bytes | None]]


@dataclass
class RawServer:
    script: Script
    read_body: bool = True  # False: answered after the head, the body left unread
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    writers: dict[int, asyncio.StreamWriter] = field(default_factory=dict)  # by connection
    ended: int = 0  # connections the client closed

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers[number] = writer
        on_this = 0
        try:
            while True:
                line = await reader.readline()
                if not line:
                    self.ended += 1
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = []
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = raw.decode().rstrip("\r\n").partition(":")
                    headers.append((name, value.strip()))
                request = Request(method, path, headers, b"", number)
                length = int(request.header("Content-Length") or 0)
                if self.read_body:
                    request.body = await reader.readexactly(length) if length else b""
                self.requests.append(request)
                on_this += 1
                reply = await self.script(request, on_this)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
                if not self.read_body or isinstance(reply, Closing):
                    return  # (without read_body, the rest of the stream is that body)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def server(script: Script, *, read_body: bool = True, tls: ssl.SSLContext | None = None
                 ) -> AsyncIterator[tuple[RawServer, int]]:
    raw = RawServer(script, read_body)
    port = free_port()
    listener = await asyncio.start_server(raw.serve, "127.0.0.1", port, ssl=tls)
    try:
        yield raw, port
    finally:
        listener.close()


@asynccontextmanager
async def deliverer(policy: NetworkPolicy = LOOPBACK, max_connections: int = 200,
                    tls: ssl.SSLContext | None = None) -> AsyncIterator[HttpDeliverer]:
    client = HttpDeliverer(policy, max_connections, own_http1=OWN_HTTP1["on"], tls=tls)
    await client.open()
    try:
        yield client
    finally:
        await client.close()


def outbound(url: str, method: str = "POST", body: bytes | None = b'{"a": 1}',
             headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
             timeout: float = 5.0) -> OutboundRequest:
    return OutboundRequest(url=url, method=method, headers=headers, body=body,
                           timeout_seconds=timeout)


def always(reply: bytes) -> Script:
    async def script(request: Request, on_connection: int) -> bytes | None:
        return reply
    return script


async def test_the_request_goes_out_as_stored_and_the_answer_is_kept() -> None:
    reply = answer(201, b'{"id": 7}', "Retry-After: 3", "X-Trace: abc")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        result = await client.send(outbound(
            f"http://127.0.0.1:{port}/hook?x=1", method="PUT", body=b'{"a": 1}',
            headers=(("Content-Type", "application/json"), ("X-Key", "k1"))))
    assert result.status_code == 201
    assert result.error_kind is None
    assert result.retry_after == "3"
    assert result.response is not None
    assert result.response.body == '{"id": 7}'
    assert not result.response.body_truncated
    assert ("retry-after", "3") in result.response.headers  # the headers kept
    (request,) = raw.requests
    assert (request.method, request.path, request.body) == ("PUT", "/hook?x=1", b'{"a": 1}')
    assert request.header("X-Key") == "k1"
    assert request.header("Content-Type") == "application/json"
    assert request.header("Content-Length") == "8"
    assert request.header("Host") == f"127.0.0.1:{port}"
    # nothing the sender did not ask for, beyond what HTTP/1.1 needs
    for added in ("User-Agent", "Accept", "Accept-Encoding", "Cookie"):
        assert request.header(added) is None, added


async def test_a_header_value_beyond_ascii_goes_out_in_utf_8() -> None:
    """The contract takes any value without CR, LF or NUL; other characters go as UTF-8
    (RFC 9110's obs-text)."""
    async with server(always(answer())) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", headers=(
            ("X-Name", "Jos\u00e9 \u2713"), ("X-Tab", "a\tb"))))
    assert result.status_code == 200, result.error
    (request,) = raw.requests
    assert request.header("X-Name") == "Jos\u00e9 \u2713"  # the server reads UTF-8
    assert request.header("X-Tab") == "a\tb"


async def test_no_body_goes_without_one_and_no_content_type() -> None:
    async with server(always(answer())) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", method="DELETE",
                                            body=None, headers=()))
    assert result.status_code == 200
    (request,) = raw.requests
    assert request.method == "DELETE"
    assert request.body == b""
    assert request.header("Content-Type") is None
    assert request.header("Content-Length") == "0"  # as aiohttp says it for all but GET


async def test_one_connection_carries_request_after_request() -> None:
    async with server(always(answer())) as (raw, port), deliverer() as client:
        for _ in range(3):
            assert (await client.send(outbound(f"http://127.0.0.1:{port}/"))).status_code == 200
    assert len(raw.requests) == 3
    assert raw.connections == 1


async def test_a_chunked_answer_is_read_whole() -> None:
    reply = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        first = await client.send(outbound(f"http://127.0.0.1:{port}/"))
        second = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert first.response is not None
    assert first.response.body == "hello world"
    assert second.status_code == 200
    assert raw.connections == 1


async def test_a_head_answer_has_no_body_to_wait_for() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    async with server(always(reply)) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", method="HEAD",
                                            body=None, headers=(), timeout=2.0))
        again = await client.send(outbound(f"http://127.0.0.1:{port}/", method="HEAD",
                                           body=None, headers=(), timeout=2.0))
    assert result.status_code == 200
    assert again.status_code == 200
    assert result.response is not None
    assert result.response.body == ""
    assert raw.connections == 1


async def test_a_long_answer_is_cut_and_its_short_tail_keeps_the_connection() -> None:
    reply = answer(500, b"x" * (BODY_LIMIT + 100))
    async with server(always(reply)) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
        await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.status_code == 500
    assert result.response is not None
    assert result.response.body_truncated
    assert len(result.response.body) == BODY_LIMIT
    assert raw.connections == 1


@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")  # aiohttp's, > 1 MiB
async def test_an_answer_before_the_body_is_read_leaves_nothing_sending() -> None:
    """A partner may refuse a large body from its head (413) without reading it: the
    attempt ends with that answer, and no task is left writing the body."""
    async def refuse(request: Request, on_connection: int) -> bytes | None:
        return answer(413, b"too large", "Connection: close")

    body = b"x" * (6 * 1024 * 1024)
    async with server(refuse, read_body=False) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", body=body))
        writing = [task for task in asyncio.all_tasks() if "write_bytes" in repr(task)]
    assert result.status_code == 413
    assert writing == []


async def test_an_answer_nobody_asked_for_is_not_taken_for_the_next_requests() -> None:
    """A partner that sends an answer on an idle kept connection (a second one to the last
    request, a bug of its own) must not have it recorded as the next request's answer."""
    async def echo(request: Request, on_connection: int) -> bytes | None:
        return answer(200, request.path.encode())

    async with server(echo) as (raw, port), deliverer() as client:
        first = await client.send(outbound(f"http://127.0.0.1:{port}/first"))
        raw.writers[1].write(answer(201, b"nobody asked"))
        await asyncio.sleep(0.05)  # it arrives while the connection waits in the pool
        second = await client.send(outbound(f"http://127.0.0.1:{port}/second"))
    assert first.status_code == 200
    assert second.status_code == 200
    assert second.response is not None
    assert second.response.body == "/second"
    assert raw.connections == 2


async def test_a_redirect_is_kept_not_followed() -> None:
    reply = answer(302, b"", "Location: /elsewhere")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/here"))
    assert result.status_code == 302
    assert [r.path for r in raw.requests] == ["/here"]


async def test_a_cookie_set_by_one_answer_is_not_sent_with_the_next_request() -> None:
    """Messages of different senders share the client: nothing of one may reach another."""
    reply = answer(200, b"ok", "Set-Cookie: session=s1; Path=/")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        for _ in range(2):
            await client.send(outbound(f"http://localhost:{port}/"))
    assert [r.header("Cookie") for r in raw.requests] == [None, None]


async def test_a_stalled_body_ends_at_the_timeout() -> None:
    async def stall(request: Request, on_connection: int) -> bytes | None:
        await asyncio.sleep(10)
        return None

    async with server(stall) as (_, port), deliverer() as client:
        started = time.monotonic()
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", timeout=0.3))
    assert result.error_kind is ErrorKind.TIMEOUT
    assert result.error == "timeout after 0.3 s"
    assert time.monotonic() - started < 3


async def test_the_timeout_covers_a_body_that_trickles() -> None:
    """The head of a 200 came, then two bytes of ten: the send ends at the timeout, and
    the partner's answer is its status (2xx is success), with what came of the body."""
    async def trickle(request: Request, on_connection: int) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"  # and nothing more

    async with server(trickle) as (_, port), deliverer() as client:
        started = time.monotonic()
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", timeout=0.3))
    assert time.monotonic() - started < 3
    assert (result.status_code, result.error_kind, result.error) == (200, None, None)
    assert result.response is not None
    assert (result.response.body, result.response.body_truncated) == ("ab", True)


@pytest.mark.parametrize(("status", "error"), [
    (200, None), (503, "HTTP 503; its body was cut short: "),
    (422, "HTTP 422; its body was cut short: ")])
async def test_an_answer_whose_body_is_cut_short_is_the_partners_answer(
        status: int, error: str | None) -> None:
    """A body shorter than its Content-Length, the connection closed: it was recorded as
    no response at all (statusCode null), and a 200 was sent again."""
    async def cut(request: Request, on_connection: int) -> bytes | None:
        writer = raw.writers[request.connection]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 100\r\n"
                     "Retry-After: 7\r\n\r\npartial b".encode())
        await writer.drain()
        return None  # and the connection closes

    async with server(cut) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, result.error_kind, result.retry_after) == (status, None, "7")
    if error is None:
        assert result.error is None
    else:
        assert (result.error or "").startswith(error)
        cause = ("the connection closed before the end of the body" if OWN_HTTP1["on"]
                 else "ClientPayloadError")
        assert (result.error or "").startswith(error + cause)
    assert result.response is not None
    assert result.response.body == "partial b"
    assert result.response.body_truncated


async def drop_second(request: Request, on_connection: int) -> bytes | None:
    """Answers a connection's first request, and closes it on the second."""
    return answer() if on_connection == 1 else None


@pytest.mark.parametrize(("method", "delivered"), [("GET", True), ("POST", False)])
async def test_a_dropped_kept_connection_sends_an_unkeyed_request_again_only_if_idempotent(
        method: str, delivered: bool) -> None:
    """The first connection answers once, then closes on the next request: a GET goes
    again on a new connection (aiohttp's rule, RFC 9112 9.3.1); a POST without an
    Idempotency-Key is not resent."""
    async with server(drop_second) as (raw, port), deliverer() as client:
        await client.send(outbound(f"http://127.0.0.1:{port}/", method=method))
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", method=method))
    if delivered:
        assert result.status_code == 200
        assert raw.connections == 2
        assert result.sent_twice
    else:
        assert result.error_kind is ErrorKind.CONNECTION
        assert raw.connections == 1
        assert not result.sent_twice


KEYED = (("Content-Type", "application/json"), ("Idempotency-Key", "sender-a:order-1"))


async def test_a_kept_connection_dropped_under_a_keyed_post_sends_it_again_on_a_new_one(
        way: bool) -> None:
    """Every delivery carries an Idempotency-Key: a POST that a kept connection dropped
    before any answer goes again at once, on a new connection, as Go's net/http does (the
    partner closed the idle connection as it left, mostly), instead of a failed attempt and
    a backoff. aiohttp's way (`Expect` only, in service) does not."""
    async with server(drop_second) as (raw, port), deliverer() as client:
        await client.send(outbound(f"http://127.0.0.1:{port}/", headers=KEYED))
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", headers=KEYED))
    if way:
        assert (result.status_code, result.error) == (200, None)
        assert raw.connections == 2
        assert [r.connection for r in raw.requests] == [1, 1, 2]
        assert raw.requests[2].body == raw.requests[1].body == b'{"a": 1}'
        assert result.sent_twice
    else:
        assert result.error_kind is ErrorKind.CONNECTION
        assert raw.connections == 1


async def test_a_request_sent_again_takes_a_new_connection_not_another_kept_one(
        way: bool) -> None:
    """Two kept connections, both dropped by the partner on their next request: the copy
    of a keyed POST that the one dropped goes on a new connection, not on the other."""
    if not way:
        pytest.skip("aiohttp's way sends no keyed POST again")
    async with server(drop_second) as (raw, port), deliverer() as client:
        url = f"http://127.0.0.1:{port}/"
        first = await asyncio.gather(*(client.send(outbound(url, headers=KEYED))
                                       for _ in range(2)))
        assert [r.status_code for r in first] == [200, 200]
        assert raw.connections == 2
        result = await client.send(outbound(url, headers=KEYED))
    assert (result.status_code, result.error, result.sent_twice) == (200, None, True)
    assert raw.connections == 3
    assert [r.connection for r in raw.requests][2:] in ([1, 3], [2, 3])


@pytest.mark.parametrize("partial", [
    b"H", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Le",
    b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"],
    ids=["a-byte", "status-line", "half-a-head", "100", "103"])
async def test_a_keyed_post_the_partner_began_to_answer_is_not_sent_again(
        partial: bytes) -> None:
    """A byte of an answer, a 1xx, a part of a head: the partner took the request, and a
    copy at once would be one it may not drop (only a silent drop is Go's to replay)."""
    async def begin_then_close(request: Request, on_connection: int) -> bytes | None:
        return answer() if on_connection == 1 else Closing(partial)

    async with server(begin_then_close) as (raw, port), deliverer() as client:
        await client.send(outbound(f"http://127.0.0.1:{port}/", headers=KEYED))
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", headers=KEYED))
    assert result.status_code is None or result.error is not None
    assert len(raw.requests) == 2
    assert raw.connections == 1


async def test_a_keyed_post_a_new_connection_dropped_is_not_sent_again() -> None:
    """On a connection of its own, a close before the answer is the partner's doing (it
    may have taken the request and failed): the attempt fails, and its retry waits."""
    async def drop(request: Request, on_connection: int) -> bytes | None:
        return None

    async with server(drop) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", headers=KEYED))
    assert result.error_kind is ErrorKind.CONNECTION
    assert len(raw.requests) == 1


async def test_a_refused_connection_is_named() -> None:
    port = free_port()
    async with deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.error_kind is ErrorKind.CONNECTION
    assert result.error == f"connection refused by 127.0.0.1:{port}"


async def test_an_answer_that_is_not_http_is_named() -> None:
    async with server(always(b"SMTP ready\r\n\r\n")) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.error_kind is ErrorKind.CONNECTION
    assert result.error is not None
    assert "invalid HTTP response" in result.error


async def test_a_name_that_resolves_to_a_refused_network_is_not_connected_to() -> None:
    async with server(always(answer())) as (raw, port), \
            deliverer(NetworkPolicy()) as client:
        result = await client.send(outbound(f"http://localhost:{port}/"))
        literal = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.error_kind is ErrorKind.TARGET_NOT_ALLOWED
    assert literal.error_kind is ErrorKind.TARGET_NOT_ALLOWED
    assert raw.requests == []


async def test_many_at_once_each_get_their_own_answer() -> None:
    async def echo(request: Request, on_connection: int) -> bytes | None:
        await asyncio.sleep(0.01)
        return answer(200, request.path.encode())

    async with server(echo) as (_, port), deliverer() as client:
        results: list[AttemptResult] = await asyncio.gather(*(
            client.send(outbound(f"http://127.0.0.1:{port}/{i}")) for i in range(50)))
    assert [r.response.body if r.response else None for r in results] == [
        f"/{i}" for i in range(50)]


EXPECTING = (("Content-Type", "application/json"), ("Expect", "100-continue"))


async def test_an_expect_100_continue_the_partner_never_answers_sends_the_body_anyway() -> None:
    """The sender asked for `Expect: 100-continue`; this partner waits for the body instead
    (as some do): the body goes out after EXPECT_CONTINUE_SECONDS, not never (it was a
    timeout at every attempt)."""
    async with server(always(answer(200))) as (raw, port), deliverer() as client:
        began = time.monotonic()
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", headers=EXPECTING,
                                            timeout=5.0))
        took = time.monotonic() - began
    assert result.status_code == 200, result.error
    (request,) = raw.requests
    assert request.header("Expect") == "100-continue"
    assert request.body == b'{"a": 1}'
    assert EXPECT_CONTINUE_SECONDS <= took < 4.0


async def test_the_wait_for_a_100_starts_when_the_head_is_out_not_before_the_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A partner that refuses at once (417, no 100) never gets the body, however long the
    connection took to open: the second counts from the head, not from the request's
    making (a connect of over 1 s sent the body right behind the head)."""
    slow = PolicyResolver.resolve

    async def resolve_slowly(self: PolicyResolver, host: str, port: int = 0,
                             family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        await asyncio.sleep(EXPECT_CONTINUE_SECONDS * 1.3)
        return await slow(self, host, port, family)

    monkeypatch.setattr(PolicyResolver, "resolve", resolve_slowly)
    after_head: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(417, b"no"))
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            after_head.append(await asyncio.wait_for(reader.read(100), 0.5))
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        async with deliverer() as client:
            result = await client.send(outbound(f"http://localhost:{port}/", headers=EXPECTING))
    finally:
        listener.close()
    assert result.status_code == 417, result.error
    assert after_head in ([], [b""]), after_head  # nothing of the body, or the close


async def test_a_100_continue_lets_the_body_go_at_once() -> None:
    bodies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        bodies.append(await reader.readexactly(length))
        writer.write(answer(201))
        await writer.drain()
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        async with deliverer() as client:
            began = time.monotonic()
            result = await client.send(outbound(f"http://127.0.0.1:{port}/",
                                                headers=EXPECTING))
            took = time.monotonic() - began
    finally:
        listener.close()
    assert result.status_code == 201, result.error
    assert bodies == [b'{"a": 1}']
    assert took < EXPECT_CONTINUE_SECONDS / 2


async def test_an_interim_answer_before_the_answer_is_not_the_answer() -> None:
    reply = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + answer(201, b"made")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
        again = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, again.status_code) == (201, 201), (result.error, again.error)
    assert result.response is not None
    assert result.response.body == "made"
    assert raw.connections == 1


async def test_a_body_that_ends_at_the_close_is_read_whole() -> None:
    """No Content-Length and not chunked: the body is what comes until the connection
    closes, and the next request opens a new one."""
    reply = Closing(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        first = await client.send(outbound(f"http://127.0.0.1:{port}/"))
        second = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (first.status_code, first.error) == (200, None)
    assert first.response is not None
    assert (first.response.body, first.response.body_truncated) == ("until the end", False)
    assert second.status_code == 200
    assert raw.connections == 2


async def test_an_answer_that_says_close_is_not_kept() -> None:
    reply = answer(200, b"ok", "Connection: close")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        for _ in range(3):
            result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
            assert (result.status_code, result.error) == (200, None)
    assert raw.connections == 3


async def test_two_answers_in_one_packet_do_not_answer_the_next_request() -> None:
    async def twice(request: Request, on_connection: int) -> bytes | None:
        return answer(200, request.path.encode()) + answer(201, b"nobody asked")

    async with server(twice) as (raw, port), deliverer() as client:
        first = await client.send(outbound(f"http://127.0.0.1:{port}/first"))
        second = await client.send(outbound(f"http://127.0.0.1:{port}/second"))
    assert [r.response.body if r.response else None for r in (first, second)] == [
        "/first", "/second"]
    assert second.status_code == 200
    assert raw.connections == 2


async def test_a_kept_connection_the_partner_closed_while_idle_is_not_used() -> None:
    """The partner closed the idle connection (its keep-alive ran out) and the close was
    read: a POST goes on a new connection at once, without a first try on the closed one."""
    async with server(always(answer())) as (raw, port), deliverer() as client:
        await client.send(outbound(f"http://127.0.0.1:{port}/"))
        raw.writers[1].close()
        await asyncio.sleep(0.05)
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, result.error) == (200, None)
    assert raw.connections == 2


async def test_at_most_max_connections_are_open_at_once() -> None:
    async def slow(request: Request, on_connection: int) -> bytes | None:
        await asyncio.sleep(0.02)
        return answer(200, request.path.encode())

    async with server(slow) as (raw, port), deliverer(max_connections=2) as client:
        results = await asyncio.gather(*(
            client.send(outbound(f"http://127.0.0.1:{port}/{i}")) for i in range(10)))
    assert [r.status_code for r in results] == [200] * 10
    assert raw.connections == 2


async def test_a_switch_of_protocols_nobody_asked_for_is_an_answer_on_a_lost_connection(
        ) -> None:
    """A 101 is recorded as the partner's status (not a success), and what follows it on
    that connection is another protocol: it carries nothing more."""
    reply = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\n\r\n")
    async with server(always(reply)) as (raw, port), deliverer() as client:
        results = [await client.send(outbound(f"http://127.0.0.1:{port}/", timeout=2.0))
                   for _ in range(2)]
    assert [(r.status_code, r.error_kind) for r in results] == [(101, None)] * 2, results
    assert raw.connections == 2


async def test_an_ipv6_literal_goes_to_its_address_with_its_host() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    raw = RawServer(always(answer()))
    try:
        listener = await asyncio.start_server(raw.serve, "::1", port)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        async with deliverer(NetworkPolicy(parse_networks(["::1/128"]))) as client:
            result = await client.send(outbound(f"http://[::1]:{port}/six"))
    finally:
        listener.close()
    assert (result.status_code, result.error) == (200, None)
    (request,) = raw.requests
    assert (request.path, request.header("Host")) == ("/six", f"[::1]:{port}")


async def test_an_idle_connection_is_closed_after_a_while(
        way: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partner sent to once is not held a connection for ever (aiohttp's own runs out
    after 15 s, too long to wait for here)."""
    if not way:
        pytest.skip("aiohttp's keep-alive time is its own")
    monkeypatch.setattr(http1, "KEPT_SECONDS", 0.1)
    async with server(always(answer())) as (raw, port), deliverer() as client:
        await client.send(outbound(f"http://127.0.0.1:{port}/"))
        for _ in range(50):
            if raw.ended:
                break
            await asyncio.sleep(0.02)
        assert raw.ended == 1
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.status_code == 200
    assert raw.connections == 2


async def test_a_partners_keep_alive_timeout_ends_reuse_a_second_before_it(way: bool) -> None:
    """`Keep-Alive: timeout=2` (Node.js servers send timeout=5, and close soon after): an idle
    connection is reused for 1 s, not up to the partner's close, where a request would
    cross it; at `timeout=1` or less it is not kept at all."""
    if not way:
        pytest.skip("aiohttp's keep-alive time is its own")
    async def hinted(request: Request, on_connection: int) -> bytes | None:
        return answer(200, b"ok", f"Keep-Alive: {request.path.strip('/')}")

    async with server(hinted) as (raw, port), deliverer() as client:
        url = f"http://127.0.0.1:{port}/timeout=2"
        for pause in (0.0, 0.3, 1.2):
            await asyncio.sleep(pause)
            assert (await client.send(outbound(url))).status_code == 200
        assert [r.connection for r in raw.requests] == [1, 1, 2]
        assert (await client.send(outbound(f"http://127.0.0.1:{port}/timeout=1"))
                ).status_code == 200
        assert (await client.send(outbound(f"http://127.0.0.1:{port}/timeout=1"))
                ).status_code == 200
    assert [r.connection for r in raw.requests] == [1, 1, 2, 2, 3]


async def test_a_connection_idle_past_its_partners_limit_is_closed_then(way: bool) -> None:
    """`Keep-Alive: timeout=2`: the idle connection is closed about 1 s later (its reuse
    ends then), not at the next 15 s sweep of every connection (helper-60), while one to a
    partner that gave no limit stays kept."""
    if not way:
        pytest.skip("aiohttp's keep-alive time is its own")
    limited = always(answer(200, b"ok", "Keep-Alive: timeout=2"))
    async with server(always(answer())) as (plain, plain_port), \
            server(limited) as (raw, port), deliverer() as client:
        assert (await client.send(outbound(f"http://127.0.0.1:{plain_port}/"))
                ).status_code == 200
        started = time.monotonic()
        assert (await client.send(outbound(f"http://127.0.0.1:{port}/"))).status_code == 200
        for _ in range(100):
            if raw.ended:
                break
            await asyncio.sleep(0.02)
        closed_after = time.monotonic() - started
        assert (raw.ended, plain.ended) == (1, 0)
    assert 0.9 < closed_after < 1.8


async def closed_within(partners: list[RawServer], seconds: float) -> list[float | None]:
    """When each partner saw its connection end, in s from now (None: not within `seconds`)."""
    started = time.monotonic()
    ended: list[float | None] = [None] * len(partners)
    while time.monotonic() - started < seconds and None in ended:
        for index, partner in enumerate(partners):
            if partner.ended and ended[index] is None:
                ended[index] = time.monotonic() - started
        await asyncio.sleep(0.01)
    return ended


@pytest.mark.parametrize("anyio_backend", [
    "asyncio", ("asyncio", {"loop_factory": uvloop.new_event_loop})], ids=["asyncio", "uvloop"])
async def test_each_idle_connection_is_closed_at_its_own_time(way: bool) -> None:
    """Kept for 0.5 s and 1 s (`timeout=1.5`, `timeout=2`): each is closed then, on
    uvloop too (`serve` runs on it; its timers fire a little early by time.monotonic())."""
    if not way:
        pytest.skip("aiohttp's keep-alive time is its own")
    async with server(always(answer(200, b"ok", "Keep-Alive: timeout=2"))) as (one, port_one), \
            server(always(answer(200, b"ok", "Keep-Alive: timeout=1.5"))) as (two, port_two), \
            deliverer() as client:
        for port in (port_one, port_two):
            assert (await client.send(outbound(f"http://127.0.0.1:{port}/"))).status_code == 200
        later, sooner = await closed_within([one, two], 3.0)
    assert sooner is not None
    assert later is not None
    assert 0.3 < sooner < 0.9, (sooner, later)
    assert 0.8 < later < 1.5, (sooner, later)


async def test_a_partner_kept_briefly_and_often_does_not_put_the_sweep_off(way: bool) -> None:
    """A partner kept for 0.15 s (`timeout=1.15`), sent to every 30 ms, while another's idle
    connection runs out at 1 s: the sweep comes then all the same (helper-61 found each
    keep of the first moving the timer later, for as long as it was sent to)."""
    if not way:
        pytest.skip("aiohttp's keep-alive time is its own")
    async with server(always(answer(200, b"ok", "Keep-Alive: timeout=2"))) as (idle, idle_port), \
            server(always(answer(200, b"ok", "Keep-Alive: timeout=1.15"))) as (_, busy_port), \
            deliverer() as client:
        assert (await client.send(outbound(f"http://127.0.0.1:{idle_port}/"))).status_code == 200
        started = time.monotonic()
        closed_after = None
        while time.monotonic() - started < 3.0 and closed_after is None:
            assert (await client.send(outbound(f"http://127.0.0.1:{busy_port}/"))
                    ).status_code == 200
            if idle.ended:
                closed_after = time.monotonic() - started
            await asyncio.sleep(0.03)
    assert closed_after is not None
    assert closed_after < 1.5


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 300_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: b\r\n" * 30_000 + b"\r\n"], ids=["long", "many"])
async def test_a_head_that_goes_on_and_on_is_refused_not_held(head: bytes) -> None:
    """A partner's head is bounded (http1.HEAD_LIMIT; aiohttp has its own bounds): the
    client does not hold whatever a partner sends before its head ends."""
    async with server(always(head)) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/", timeout=5.0))
    assert result.error_kind is ErrorKind.CONNECTION, result
    assert "invalid HTTP response" in (result.error or "")


async def test_a_connection_the_partner_closes_after_its_answer_goes_to_no_waiting_request(
        ) -> None:
    """One connection at most, two POSTs at once, a partner that closes after each answer
    without saying so: the second POST waits for the first one's connection, and must not
    be written on it once its end has been read (it was lost, and recorded as failed)."""
    async with server(always(Closing(answer()))) as (raw, port), \
            deliverer(max_connections=1) as client:
        results = []
        for i in range(10):
            results += await asyncio.gather(*(
                client.send(outbound(f"http://127.0.0.1:{port}/{i}")) for _ in range(2)))
    assert [(r.status_code, r.error) for r in results] == [(200, None)] * 20
    assert len(raw.requests) == 20


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2  \r\nok\r\n0\r\n\r\n"],
    ids=["bare-LF", "folded-header", "spaces-after-chunk-size"])
async def test_an_answer_aiohttp_lets_pass_is_taken(reply: bytes) -> None:
    """A partner that answers so has taken the request: taking its answer for none would
    send the request again at every retry."""
    async with server(always(reply)) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, result.error) == (200, None)
    assert result.response is not None
    assert result.response.body == "ok"


async def test_a_coding_that_is_not_chunked_runs_to_the_close() -> None:
    reply = Closing(b"HTTP/1.1 500 X\r\nTransfer-Encoding: identity\r\n\r\nthe whole body")
    async with server(always(reply)) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, result.error) == (500, None)
    assert result.response is not None
    assert (result.response.body, result.response.body_truncated) == ("the whole body", False)


async def test_a_header_value_keeps_no_trailing_space() -> None:
    reply = answer(503, b"busy", "Retry-After: 7  ")
    async with server(always(reply)) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert (result.status_code, result.retry_after) == (503, "7")


async def test_a_connection_in_use_when_the_client_closes_is_not_kept() -> None:
    async def slow(request: Request, on_connection: int) -> bytes | None:
        await asyncio.sleep(0.2)
        return answer()

    async with server(slow) as (raw, port):
        async with deliverer() as client:
            sending = asyncio.ensure_future(client.send(outbound(f"http://127.0.0.1:{port}/")))
            await asyncio.sleep(0.05)
        await sending
        for _ in range(50):
            if raw.ended:
                break
            await asyncio.sleep(0.02)
    assert raw.ended == 1


async def test_a_nul_in_a_header_value_is_an_invalid_answer() -> None:
    reply = b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"
    async with server(always(reply)) as (_, port), deliverer() as client:
        result = await client.send(outbound(f"http://127.0.0.1:{port}/"))
    assert result.error_kind is ErrorKind.CONNECTION, result
    assert "invalid HTTP response" in (result.error or "")


@dataclass
class Certificates:
    authority: trustme.CA
    server: ssl.SSLContext  # a certificate for 127.0.0.1 and localhost, by `authority`
    trusting: ssl.SSLContext  # a client's, that trusts `authority`

    def server_for(self, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.authority.issue_cert(*names).configure_cert(context)
        return context


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    authority = trustme.CA()
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    certificates = Certificates(authority, ssl.create_default_context(), trusting)
    certificates.server = certificates.server_for("127.0.0.1", "localhost")
    return certificates


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_over_tls_the_request_goes_out_and_its_connection_is_kept(
        host: str, certificates: Certificates) -> None:
    async def echo(request: Request, on_connection: int) -> bytes | None:
        return answer(201, request.body, "Retry-After: 4")

    async with server(echo, tls=certificates.server) as (raw, port), \
            deliverer(tls=certificates.trusting) as client:
        results = [await client.send(outbound(f"https://{host}:{port}/hook?n={n}",
                                              body=b'{"n": %d}' % n)) for n in range(3)]
    assert [(r.status_code, r.error, r.retry_after) for r in results] == [(201, None, "4")] * 3
    assert [r.response.body if r.response else None for r in results] == [
        '{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert [(r.path, r.header("Host")) for r in raw.requests] == [
        (f"/hook?n={n}", f"{host}:{port}") for n in range(3)]
    assert raw.connections == 1


async def test_over_tls_a_chunked_answer_and_a_long_one_are_read(
        certificates: Certificates) -> None:
    replies = iter([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n", answer(500, b"x" * (BODY_LIMIT + 10))])

    async def script(request: Request, on_connection: int) -> bytes | None:
        return next(replies)

    async with server(script, tls=certificates.server) as (_, port), \
            deliverer(tls=certificates.trusting) as client:
        chunked = await client.send(outbound(f"https://127.0.0.1:{port}/"))
        long = await client.send(outbound(f"https://127.0.0.1:{port}/"))
    assert chunked.response is not None
    assert (chunked.status_code, chunked.response.body) == (200, "hello")
    assert long.response is not None
    assert (long.status_code, long.response.body_truncated) == (500, True)


async def test_a_certificate_nobody_trusts_is_refused(certificates: Certificates) -> None:
    """The deliverer's own context trusts the system's authorities only."""
    async with server(always(answer()), tls=certificates.server) as (raw, port), \
            deliverer() as client:
        result = await client.send(outbound(f"https://127.0.0.1:{port}/"))
    assert result.error_kind is ErrorKind.CONNECTION, result
    assert "certificate verify failed" in (result.error or ""), result.error
    assert raw.requests == []


async def test_a_certificate_for_another_name_is_refused(certificates: Certificates) -> None:
    elsewhere = certificates.server_for("partner.example")
    async with server(always(answer()), tls=elsewhere) as (raw, port), \
            deliverer(tls=certificates.trusting) as client:
        result = await client.send(outbound(f"https://localhost:{port}/"))
    assert result.error_kind is ErrorKind.CONNECTION, result
    assert "certificate verify failed" in (result.error or ""), result.error
    assert raw.requests == []


async def test_over_tls_an_early_answer_stops_the_body_and_its_connection(
        way: bool, certificates: Certificates) -> None:
    """The partner refuses a large body from its head (413, keep-alive) and reads no more:
    what is left of the body must not stay queued on a kept connection, where the next
    request would wait behind it until its timeout. TLS hands the encrypted body to the
    socket's transport at once, so the check must look there too."""
    if not way:
        pytest.skip("aiohttp over TLS keeps such a connection: only HEAD and Expect go that way")
    port = free_port()
    connections = 0
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        if connections == 1:
            writer.write(answer(413, b"too large"))
            await writer.drain()
            await release.wait()  # and reads nothing more
        else:
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            writer.write(answer(200))
            await writer.drain()
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", port, ssl=certificates.server)
    try:
        async with deliverer(tls=certificates.trusting) as client:
            large = await client.send(outbound(f"https://127.0.0.1:{port}/",
                                               body=b"x" * (8 * 1024 * 1024)))
            small = await client.send(outbound(f"https://127.0.0.1:{port}/", timeout=3.0))
    finally:
        release.set()
        listener.close()
    assert large.status_code == 413
    assert (small.status_code, small.error) == (200, None)
    assert connections == 2


async def test_a_name_whose_first_address_never_answers_is_reached_at_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A partner with a dead address among its name's (a node gone, a broken IPv6 route):
    the next address is tried after a quarter of a second, as aiohttp does (RFC 8305),
    not after the attempt's whole timeout."""
    async def two_addresses(self: PolicyResolver, host: str, port: int = 0,
                            family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for address in ("127.0.0.2", "127.0.0.1")]

    monkeypatch.setattr(PolicyResolver, "resolve", two_addresses)
    async with server(always(answer())) as (raw, port), deliverer() as client:
        dead = socket.socket()  # on the same port, at the name's first address
        dead.bind(("127.0.0.2", port))
        dead.listen(0)
        stuck = []
        for _ in range(3):  # its queue full: a connect to it now waits for ever
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.2", port))
            stuck.append(filler)
        try:
            began = time.monotonic()
            result = await client.send(outbound(f"http://partner.test:{port}/", timeout=4.0))
            took = time.monotonic() - began
        finally:
            dead.close()
            for filler in stuck:
                filler.close()
    assert (result.status_code, result.error) == (200, None)
    assert took < 2.0
    assert len(raw.requests) == 1


async def test_a_name_with_a_final_dot_matches_its_certificate(
        certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    """`localhost.` is `localhost` (submission.py takes such names): the certificate is
    checked for the name without its final dot, as aiohttp checks it."""
    async def loopback(self: PolicyResolver, host: str, port: int = 0,
                       family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        assert host == "localhost."
        return [{"hostname": host, "host": "127.0.0.1", "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    monkeypatch.setattr(PolicyResolver, "resolve", loopback)  # not every resolver knows it
    async with server(always(answer()), tls=certificates.server) as (_, port), \
            deliverer(tls=certificates.trusting) as client:
        result = await client.send(outbound(f"https://localhost.:{port}/"))
    assert (result.status_code, result.error) == (200, None)


async def test_a_partner_that_closes_in_the_tls_handshake_is_named(
        way: bool, certificates: Certificates) -> None:
    """asyncio's TLS raises a ConnectionResetError with no text for it."""
    if not way:
        pytest.skip("aiohttp records it with no reason")

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                            ) -> None:
        await reader.read(100)  # the ClientHello
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(close_at_once, "127.0.0.1", port)
    try:
        async with deliverer(tls=certificates.trusting) as client:
            result = await client.send(outbound(f"https://127.0.0.1:{port}/"))
    finally:
        listener.close()
    assert result.error_kind is ErrorKind.CONNECTION
    assert result.error == (f"cannot connect to 127.0.0.1:{port}: "
                            "the connection closed during the TLS handshake")


async def test_a_partner_that_speaks_in_the_tls_handshake_is_not_sent_the_request(
        way: bool, certificates: Certificates) -> None:
    """TLS 1.2 lets a partner send data behind its last handshake message, in the same
    segment: it arrives before the request is written, so it is nobody's answer, and the
    connection is not used (aiohttp takes it for the answer)."""
    if not way:
        pytest.skip("aiohttp takes such data for the answer")
    context = certificates.server_for("127.0.0.1")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    requests: list[bytes] = []

    def serve() -> None:  # blocking, in a thread: asyncio's server cannot send so early
        with contextlib.suppress(OSError), listening.accept()[0] as accepted:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_side=True)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    accepted.sendall(outgoing.read())
                    incoming.write(accepted.recv(65536))
            tls.write(answer(200, b"before anybody asked"))
            accepted.sendall(outgoing.read())  # behind the handshake's last message
            accepted.settimeout(1.0)
            while data := accepted.recv(65536):
                incoming.write(data)
                with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    requests.append(tls.read(65536))

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    try:
        async with deliverer(tls=certificates.trusting) as client:
            result = await client.send(outbound(f"https://127.0.0.1:{port}/"))
    finally:
        serving.join(timeout=5)
        listening.close()
    assert result.error_kind is ErrorKind.CONNECTION, result
    assert "sent data before it was asked" in (result.error or ""), result.error
    assert [r for r in requests if r] == []


async def test_a_tls_connection_closed_on_a_silent_partner_is_let_go_soon(
        way: bool, certificates: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    """The partner answers `Connection: close`, then neither reads nor closes: the client's
    close_notify gets no reply. The connection (an open file) is let go after
    http1.CLOSE_NOTIFY_SECONDS, not after asyncio's 30 s."""
    if not way:
        pytest.skip("aiohttp waits asyncio's 30 s")
    monkeypatch.setattr(http1, "CLOSE_NOTIFY_SECONDS", 0.5)
    lost: list[float] = []
    lose = http1.Connection.connection_lost

    def record(self: http1.Connection, exc: Exception | None) -> None:
        lost.append(time.monotonic())
        lose(self, exc)

    monkeypatch.setattr(http1.Connection, "connection_lost", record)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    done = threading.Event()

    def serve() -> None:  # blocking, in a thread: asyncio's server would answer the close
        with contextlib.suppress(OSError), listening.accept()[0] as accepted, \
                certificates.server.wrap_socket(accepted, server_side=True) as tls:
            tls.recv(65536)  # the request (small: one record)
            tls.sendall(answer(200, b"ok", "Connection: close"))
            done.wait(10)  # silent: reads nothing, closes nothing

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    try:
        async with deliverer(tls=certificates.trusting) as client:
            result = await client.send(outbound(f"https://127.0.0.1:{port}/"))
            answered = time.monotonic()
            for _ in range(150):
                if lost:
                    break
                await asyncio.sleep(0.02)
    finally:
        done.set()
        serving.join(timeout=5)
        listening.close()
    assert (result.status_code, result.error) == (200, None)
    assert lost, "the connection was still open 3 s after its answer"
    assert lost[0] - answered < 2.0
