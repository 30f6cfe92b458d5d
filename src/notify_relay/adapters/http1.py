"""The common delivery (HTTP/1.1, over TLS or not, no `Expect`, not HEAD) on asyncio's
transport and httptools' response parser, with a pool of kept connections.

aiohttp's client spends much of its CPU on machinery a delivery does not use (stream
readers, payload writers, header multidicts, its connector's bookkeeping); this exchange
does what a delivery needs and nothing more. It took about a fifth off the delivering
process's CPU a message (bench/run.py, measured against the harness's in the same run), and
the client alone went 2.1-2.5x as fast. The rest (HEAD, `Expect: 100-continue`) goes through aiohttp
(http.py); tests/integration/test_http_deliverer.py runs every wire test on both.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohappyeyeballs
import httptools

from notify_relay.cycles import release_frames
from notify_relay.domain.response import BODY_LIMIT

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver
    from yarl import URL

KEPT_SECONDS = 15.0  # an idle kept connection is closed after this (aiohttp's default)
# taken off a partner's own idle limit (`Keep-Alive: timeout=N`), so that a connection is not
# reused just as the partner closes it (undici's threshold)
KEEP_ALIVE_MARGIN_SECONDS = 1.0
# idle connections are closed when the first of them runs out, at most this often: one
# past a partner's limit is not held (a socket, if the partner keeps it open, and a place
# among the idle) until a later sweep
SWEEP_GAP_SECONDS = 0.25
# a sweep takes a connection due this soon as run out: uvloop's timers read a cached
# clock and fire a little before time.monotonic() says (closed 0.25 s late otherwise)
SWEEP_EARLY_SECONDS = 0.01
KEEP_ALIVE_READ = 128  # of that header's value, read: `timeout=5, max=1000` is 20
CONNECT_NEXT_SECONDS = 0.25  # a connect to one address, before the next is tried beside it
NAMES_KEPT_SECONDS = 10.0  # a name's allowed addresses are used this long (as aiohttp's)
# a TLS connection closed waits this long for the partner's close_notify (asyncio's default
# is 30 s, an open file for each connection a silent partner leaves hanging)
CLOSE_NOTIFY_SECONDS = 2.0
HEAD_LIMIT = 64 * 1024  # bytes before the answer's head is whole (interim answers too)
_LARGE_BODY = 64 * 1024  # a body this large is not copied behind its head
# the methods that go without Content-Length when they have no body (aiohttp's GET_METHODS)
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ExchangeError(Exception):
    """No whole answer: its message says what happened, as the attempt records it."""


class Unconnected(ExchangeError):
    pass


class Dropped(ExchangeError):
    """The connection closed before the answer's head: a kept one (`reused`) from which not
    a byte came back (`silent`) may have been closed by the partner as the request left, so
    the request may go again (http.py says when)."""

    reused = False

    def __init__(self, message: str, *, silent: bool) -> None:
        super().__init__(message)
        self.silent = silent


class InvalidAnswer(ExchangeError):
    pass


class _Spent:
    """What a parser calls back once its answer is settled: it is not fed again."""


# an answer settled lets go of its parser (which holds it: a reference cycle a message)
_SPENT_PARSER = httptools.HttpResponseParser(_Spent())


class Answer:
    """An answer as its bytes arrive: httptools calls these methods as it parses."""

    __slots__ = ("_body_ends_at_close", "_extra", "_head_bytes", "_interim", "_keep", "chunks",
                 "complete", "done", "head", "headers", "kept", "parser", "size", "status")

    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.parser = httptools.HttpResponseParser(self)
        # what aiohttp's parser lets pass, this one does too: a bare LF for CRLF, a folded
        # or oddly spaced header, spaces after a chunk's size (a partner that answers so has
        # taken the request, and taking its answer for none would send the request again)
        self.parser.set_dangerous_leniencies(lenient_headers=True,
                                             lenient_optional_cr_before_lf=True,
                                             lenient_spaces_after_chunk_size=True)
        self.done = done  # True: the connection may carry the next request
        self.head = False  # the head is whole: `status` and `headers` are the answer's
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.kept = 0  # bytes of the body in `chunks` (BODY_LIMIT + 1 at most)
        self.size = 0  # bytes of the body received
        self.complete = False
        self._keep = False
        self._extra = False  # bytes after the answer: the connection is not used again
        self._interim = False
        self._body_ends_at_close = False
        self._head_bytes = 0

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self._extra = self._extra or self.complete

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head:  # a chunked body's trailers are not kept
            if b"\0" in value:  # as aiohttp: its lenient parser lets NUL through
                raise ValueError("NUL in a header value")
            self.headers.append((name.decode("latin-1"),
                                 value.rstrip(b" \t").decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # 100 or 103 before the answer
            self._interim = True
            self.headers = []
            return
        self.head = True
        self.status = status
        coding = length = None
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == "transfer-encoding":
                coding = value
            elif lowered == "content-length":
                length = value
        # RFC 9112 6.3: a coding that does not end in chunked runs to the close, as does a
        # body with neither (llhttp reads it so)
        if coding is not None:
            framed = coding.rstrip().lower().endswith("chunked")
        else:
            framed = length is not None
        self._body_ends_at_close = not framed and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.size += len(body)
        room = BODY_LIMIT + 1 - self.kept
        if room > 0:
            piece = body[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self.complete:
            self.complete = True
            self._keep = self.parser.should_keep_alive()

    def let_go(self) -> None:
        """The answer settled: its parser (which refers back to it) goes now, not at the
        collector's next run."""
        self.parser = _SPENT_PARSER

    # from the connection
    def feed(self, data: bytes) -> None:
        if self.done.done():  # more after the answer: nobody asked for it
            return
        if not self.head:  # a head that never ends would be held whole by the parser
            self._head_bytes += len(data)
        error = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 (aiohttp records it as the answer)
            if self.head and not self.complete:
                self.complete = True
                self._keep = False
            else:
                error = "an upgrade nobody asked for"
        except httptools.HttpParserError as exc:
            error = str(exc)
        if self.complete:  # what came after it, if anything, makes the connection unusable
            self.done.set_result(self._keep and not self._extra and error is None)
        elif error is not None:
            self.done.set_exception(InvalidAnswer(
                f"invalid HTTP response from the partner: {error}"[:500]))
        elif not self.head and self._head_bytes > HEAD_LIMIT:
            self.done.set_exception(InvalidAnswer(
                "invalid HTTP response from the partner: its head goes on beyond "
                f"{HEAD_LIMIT // 1024} KiB"))
        elif self.head and self.size > BODY_LIMIT:
            # enough is kept; the rest of a long body is not waited for (aiohttp's
            # path reads on once, as far as what has come)
            self.done.set_result(False)

    def lost(self) -> None:
        if self.done.done():
            return
        if self.head and self._body_ends_at_close:
            self.complete = True
            self.done.set_result(False)
        elif self.head:
            self.done.set_exception(ExchangeError(
                "the connection closed before the end of the body"))
        elif self._head_bytes:  # it took the request: a 1xx, or part of a head, came
            self.done.set_exception(Dropped(
                "the partner closed the connection before the end of its answer's head",
                silent=False))
        else:
            self.done.set_exception(Dropped(
                "the partner closed the connection before it answered", silent=True))

    @property
    def prefix(self) -> bytes:
        """The body's first bytes: BODY_LIMIT + 1 at most, so that a longer one shows."""
        return b"".join(self.chunks)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


class Connection(asyncio.Protocol):
    __slots__ = ("answer", "idle_since", "kept_for", "tcp", "transport", "usable")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None  # the request's (TLS's, over TLS)
        self.tcp: asyncio.Transport | None = None  # the socket's
        self.answer: Answer | None = None  # of the request in flight
        self.usable = True  # False: closed, or it carried bytes nobody asked for
        self.idle_since = 0.0
        self.kept_for = KEPT_SECONDS  # idle, reused for so long (the partner's limit too)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.tcp = transport  # type: ignore[assignment]

    def expires(self) -> float:
        """When, idle, it stops being fit for the next request (time.monotonic())."""
        return self.idle_since + self.kept_for

    def reusable(self, now: float) -> bool:
        """Fit for the next request: open, nothing unasked on it, idle for not too long."""
        return (self.usable and now < self.expires()
                and self.transport is not None and not self.transport.is_closing())

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def unsent(self) -> int:
        """Bytes written and not sent yet. TLS hands what it has encrypted to the socket's
        transport at once, so over TLS that one holds most of a large body."""
        size = self.transport.get_write_buffer_size() if self.transport else 0
        if self.tcp is not None and self.tcp is not self.transport:
            size += self.tcp.get_write_buffer_size()
        return size

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # an answer nobody asked for: never taken for the next one
            self.usable = False
            if self.transport is not None:
                self.transport.abort()
            return
        self.answer.feed(data)

    def eof_received(self) -> bool | None:
        self.usable = False  # now: the next request must not take it before it is lost
        return None  # the transport closes, and connection_lost ends the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.answer is not None:
            self.answer.lost()


class Http1Client:
    """Kept connections by (host, port, TLS or not), at most `max_connections` exchanges at
    once. `tls`: the context that https connections are made and verified with."""

    def __init__(self, resolver: AbstractResolver, max_connections: int,
                 tls: ssl.SSLContext) -> None:
        self._resolver = resolver
        self._tls = tls
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._idle_count = 0
        self._names: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0  # time.monotonic() of the next sweep, with a _sweeper
        self._closed = False

    async def close(self) -> None:
        """Idle connections closed; one still carrying an exchange closes when it ends."""
        self._closed = True
        await self._resolver.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connections in self._idle.values():
            for connection in connections:
                connection.drop()
        self._idle.clear()
        self._idle_count = 0

    async def exchange(self, url: URL, method: str, headers: Sequence[tuple[str, str]],
                       body: bytes | None, answer: Answer, *, fresh: bool = False) -> None:
        """The request sent and `answer` filled; raises ExchangeError (the answer says
        how far it got). The caller bounds the time. `fresh`: on a new connection, not a
        kept one."""
        key = (url.raw_host or "", url.port or 80, url.scheme == "https")
        message = _request(url, method, headers, body)
        try:
            async with self._slots:
                connection = None if fresh else self._kept(key)
                reused = connection is not None
                try:
                    await self._exchange_on(connection or await self._connect(*key), key,
                                            message, answer)
                except Dropped as exc:
                    exc.reused = reused
                    raise
        finally:  # however far it got (a refused connect too)
            answer.let_go()

    async def _exchange_on(self, connection: Connection, key: tuple[str, int, bool],
                           message: tuple[bytes, ...], answer: Answer) -> None:
        transport = connection.transport
        assert transport is not None
        connection.answer = answer
        try:
            if len(message) == 2:
                transport.writelines(message)
            else:
                transport.write(message[0])
            keep = await answer.done
        except BaseException:
            transport.abort()
            raise
        finally:
            connection.answer = None
        unsent = connection.unsent()
        if keep and connection.usable and not unsent:
            connection.kept_for = _kept_for(answer.header("keep-alive"))
            if connection.kept_for > 0:
                self._keep(key, connection)
            else:
                transport.close()
        elif unsent:  # an early answer: the body stops
            transport.abort()
        else:
            transport.close()

    def _kept(self, key: tuple[str, int, bool]) -> Connection | None:
        connections = self._idle.get(key)
        now = time.monotonic()
        while connections:
            connection = connections.pop()
            self._idle_count -= 1
            if connection.reusable(now):
                return connection
            connection.drop()
        return None

    def _keep(self, key: tuple[str, int, bool], connection: Connection) -> None:
        transport = connection.transport
        assert transport is not None
        if self._closed or self._idle_count >= self._max_idle:
            transport.close()
            return
        connection.idle_since = now = time.monotonic()
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1
        self._sweep_in(connection.kept_for, now)

    def _sweep_in(self, seconds: float, now: float) -> None:
        """A sweep in `seconds` (SWEEP_GAP_SECONDS at least), unless one comes sooner: a
        connection kept for as long as those before it (most are) moves no timer, and a
        timer only ever moves earlier: one kept for less than the gap, again and again,
        would otherwise put the sweep off for as long as its partner is sent to."""
        seconds = max(seconds, SWEEP_GAP_SECONDS)
        if self._sweeper is not None:
            if now + seconds >= self._sweep_at:
                return
            self._sweeper.cancel()
        self._sweep_at = now + seconds
        self._sweeper = asyncio.get_running_loop().call_later(seconds, self._sweep)

    def _sweep(self) -> None:
        """Idle connections past their time closed (KEPT_SECONDS, or less for a partner
        that said so), and those a partner closed let go: for hosts no longer sent to."""
        self._sweeper = None
        now = time.monotonic()
        first = math.inf  # when the next of those left runs out
        for key, connections in list(self._idle.items()):
            fresh = []
            for connection in connections:
                if connection.reusable(now + SWEEP_EARLY_SECONDS):
                    fresh.append(connection)
                    first = min(first, connection.expires())
                else:
                    connection.drop()
            self._idle_count -= len(connections) - len(fresh)
            if fresh:
                self._idle[key] = fresh
            else:
                del self._idle[key]
        if self._idle:
            self._sweep_in(first - now, now)

    async def _connect(self, host: str, port: int, tls: bool) -> Connection:
        """A new connection, to the first of the host's addresses that takes it (and, over
        TLS, shows a certificate for the host). An IP literal was judged by the caller; a
        name's addresses are judged here."""
        try:
            addresses = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            addresses = await self._addresses(host, port)
        try:
            return await self._open(addresses, port, host if tls else None)
        except OSError as exc:
            refused = isinstance(exc, ConnectionRefusedError)
            # asyncio's TLS raises a bare ConnectionResetError for a close mid-handshake
            reason = exc.strerror or str(exc) or (
                "the connection closed during the TLS handshake" if tls
                else type(exc).__name__)
            # its frames (asyncio's TLS ones hold a 256 KiB buffer) go now, not with the
            # collector's next run
            release_frames(exc)
            exc.__traceback__ = None
        if refused:
            raise Unconnected(f"connection refused by {host}:{port}")
        raise Unconnected(f"cannot connect to {host}:{port}: {reason}")

    async def _open(self, addresses: list[str], port: int, tls_name: str | None
                    ) -> Connection:
        """Connected to the first address that answers; the next one is tried after
        CONNECT_NEXT_SECONDS without giving up on the first (happy eyeballs, RFC 8305, as
        aiohttp's connector does: one dead address among a name's must not stall it)."""
        loop = asyncio.get_running_loop()
        infos = [_address_info(address, port) for address in addresses]
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=CONNECT_NEXT_SECONDS)
        try:
            tcp, connection = await loop.create_connection(Connection, sock=sock)
        except BaseException:
            sock.close()
            raise
        if tls_name is None:
            return connection
        try:  # the host's name, without a final dot, as SNI and as the certificate's name
            secured = await loop.start_tls(
                tcp, connection, self._tls, server_hostname=tls_name.strip("[]").rstrip("."),
                ssl_shutdown_timeout=CLOSE_NOTIFY_SECONDS)
        except BaseException:
            tcp.abort()
            raise
        if secured is None:  # only when the transport closed meanwhile
            raise ConnectionResetError("the connection closed during the TLS handshake")
        connection.transport = secured
        if not connection.usable:  # it spoke before it was asked (in the handshake's data)
            secured.abort()
            raise ConnectionResetError("the partner sent data before it was asked; "
                                       "nothing was sent")
        return connection

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The name's addresses the network policy allows (its resolver raises
        TargetRefused when none is), kept NAMES_KEPT_SECONDS."""
        now = time.monotonic()
        known = self._names.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            results = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        except OSError as exc:
            raise Unconnected(f"cannot connect to {host}:{port}: "
                              f"{exc.strerror or exc}") from None
        addresses = list(dict.fromkeys(result["host"] for result in results))
        if len(self._names) > 1024:
            self._names.clear()
        self._names[(host, port)] = (now + NAMES_KEPT_SECONDS, addresses)
        return addresses


def _kept_for(keep_alive: str | None) -> float:
    """How long an idle connection may be reused: KEPT_SECONDS, or less when the partner's
    `Keep-Alive` header says it closes sooner (RFC 2068 19.7.1.1: `timeout=N`, in seconds).

    Only its first KEEP_ALIVE_READ characters are read (a head is parsed on the event loop
    at every answer): a timeout beyond them is not seen, one cut short reads as shorter."""
    if keep_alive is None:
        return KEPT_SECONDS
    for parameter in keep_alive[:KEEP_ALIVE_READ].split(","):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "timeout":
            try:
                timeout = float(value.strip().strip('"'))
            except ValueError:
                return KEPT_SECONDS
            if timeout != timeout:  # NaN
                return KEPT_SECONDS
            kept = min(KEPT_SECONDS, timeout - KEEP_ALIVE_MARGIN_SECONDS)
            return kept if kept >= 0.1 else 0.0  # less: not worth keeping
    return KEPT_SECONDS


def _address_info(address: str, port: int
                  ) -> tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


def _request(url: URL, method: str, headers: Sequence[tuple[str, str]],
             body: bytes | None) -> tuple[bytes, ...]:
    """The request's bytes: its head, and its body behind it in the same write when small.
    Host and Content-Length are added as aiohttp adds them; nothing else is."""
    lines = [f"{method} {url.raw_path_qs or '/'} HTTP/1.1\r\nHost: {url.host_port_subcomponent}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    elif method not in _BODILESS:
        lines.append("Content-Length: 0")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    if not body:
        return (head,)
    if len(body) >= _LARGE_BODY:
        return (head, body)
    return (head + body,)
