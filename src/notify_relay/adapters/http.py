"""Deliverer on aiohttp and on an HTTP/1.1 exchange of its own (http1.py), with the
network policy enforced where the socket connects.

aiohttp was measured against httpx on this machine (bench/clients.py); see the README.
Requests without `Expect`, other than HEAD, go through http1.py, which costs half the CPU
of aiohttp's client; the rest go through aiohttp. Both verify TLS with one context.
Names are resolved by a resolver that drops refused addresses, so the address that is
checked is the address connected to: a DNS answer that changes between a check and the
connection (rebinding) cannot reach a refused network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from notify_relay.adapters.http1 import Answer, Dropped, ExchangeError, Http1Client
from notify_relay.cycles import release_frames
from notify_relay.domain.network import NetworkPolicy
from notify_relay.domain.response import BODY_LIMIT, PartnerResponse
from notify_relay.domain.retry import AttemptResult, ErrorKind, is_success
from notify_relay.ports import OutboundRequest

RESPONSE_READ_LIMIT = 64 * 1024
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110
_NO_TIMEOUTS = aiohttp.ClientTimeout()  # the connector's: send() bounds the whole exchange
# a sender's `Expect: 100-continue` holds the body until the partner says 100; one that
# never does (some do not) gets it after this long, as curl and Go's client send it
EXPECT_CONTINUE_SECONDS = 1.0


class TargetRefused(Exception):
    """Every address of the target is refused by the network policy."""


class PolicyResolver(AbstractResolver):
    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = []
        reasons = []
        for result in results:
            reason = self._policy.refusal(ipaddress.ip_address(result["host"]))
            if reason is None:
                allowed.append(result)
            else:
                reasons.append(reason)
        if not allowed:
            raise TargetRefused(f"{host} resolves to refused addresses: {'; '.join(reasons)}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


async def _read_prefix(stream: aiohttp.StreamReader, size: int, chunks: list[bytes]) -> bytes:
    """Up to `size` bytes: a single read may return fewer before the body ends. What was
    read is in `chunks` too, for a body that fails part-way."""
    wanted = size
    while wanted > 0:
        chunk = await stream.read(wanted)
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)


def _failure(exc: BaseException, timeout_seconds: float) -> AttemptResult:
    """What a request that got no answer records (most specific kind first)."""
    if isinstance(exc, TargetRefused):
        return AttemptResult(error_kind=ErrorKind.TARGET_NOT_ALLOWED,
                             error=f"target not allowed: {exc}")
    if isinstance(exc, ExchangeError):
        return AttemptResult(error_kind=ErrorKind.CONNECTION, error=str(exc))
    if isinstance(exc, TimeoutError):
        return AttemptResult(error_kind=ErrorKind.TIMEOUT,
                             error=f"timeout after {timeout_seconds:g} s")
    if isinstance(exc, aiohttp.InvalidURL):
        return AttemptResult(error_kind=ErrorKind.INVALID_REQUEST, error=f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return AttemptResult(error_kind=ErrorKind.CONNECTION, error=_describe_connect_error(exc))
    if isinstance(exc, aiohttp.ClientResponseError):  # not a status the partner sent
        return AttemptResult(error_kind=ErrorKind.CONNECTION,
                             error=f"invalid HTTP response from the partner: "
                                   f"{exc.message}"[:500])
    return AttemptResult(error_kind=ErrorKind.CONNECTION,
                         error=f"{type(exc).__name__}: {exc}"[:500])


def _cut_short(code: int, headers: Iterable[tuple[str, str]], retry_after: str | None,
               prefix: bytes, exc: BaseException, timeout_seconds: float) -> AttemptResult:
    """The answer's head came and its body did not come whole (the connection closed, or
    the timeout passed): the partner answered, with its status. A 2xx is a delivery (it
    was recorded as no response and sent again); any other status is judged as such."""
    cut = _failure(exc, timeout_seconds).error
    return AttemptResult(
        status_code=code, retry_after=retry_after,
        error=None if is_success(code) else f"HTTP {code}; its body was cut short: {cut}",
        response=PartnerResponse.capture(headers, prefix, True))


def _describe_connect_error(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused by {exc.host}:{exc.port}"
    return f"cannot connect to {exc.host}:{exc.port}: {os_error.strerror or os_error}"


class HttpDeliverer:
    """Owns one pooled session and one pool of its own; open() and close() bracket their
    life. `own_http1=False` sends everything through aiohttp (its wire tests)."""

    def __init__(self, policy: NetworkPolicy, max_connections: int = 200,
                 own_http1: bool = True, tls: ssl.SSLContext | None = None) -> None:
        self._policy = policy
        self._tls = tls  # None: the system's trusted certificates, as aiohttp's default
        self._max_connections = max_connections
        self._own_http1 = own_http1
        self._session: aiohttp.ClientSession | None = None
        self._http1: Http1Client | None = None

    async def open(self) -> None:
        if self._tls is None:  # it reads the system's certificates: not on the loop
            self._tls = await asyncio.to_thread(_verifying_context)
        connector = aiohttp.TCPConnector(
            ssl=self._tls,
            limit=self._max_connections,
            limit_per_host=0,
            resolver=PolicyResolver(self._policy),
            ttl_dns_cache=10,
            enable_cleanup_closed=False,
        )
        # the session holds the pool for _answered(), which does not go through its request():
        # none of its settings (cookies, proxies from the environment, default headers) apply
        self._session = aiohttp.ClientSession(connector=connector)
        if self._own_http1:
            self._http1 = Http1Client(PolicyResolver(self._policy), self._max_connections,
                                      self._tls)

    async def close(self) -> None:
        if self._http1 is not None:
            await self._http1.close()
            self._http1 = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: OutboundRequest) -> AttemptResult:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("deliverer is not open")
        try:
            url = URL(request.url, encoded=True)
        except (ValueError, TypeError) as exc:
            return AttemptResult(error_kind=ErrorKind.INVALID_REQUEST, error=f"invalid URL: {exc}")
        if url.scheme not in ("http", "https") or not url.raw_host:
            return AttemptResult(error_kind=ErrorKind.INVALID_REQUEST,
                                 error=f"invalid URL: {request.url}"[:500])
        refusal = self._policy.literal_refusal(url.host or "")
        if refusal is not None:
            return AttemptResult(error_kind=ErrorKind.TARGET_NOT_ALLOWED,
                                 error=f"target not allowed: {refusal}")
        if (self._http1 is not None and request.method != "HEAD"
                and url.raw_host.isascii() and not _expects(request.headers)):
            return await _sent_by(self._http1, request, url)
        answered: aiohttp.ClientResponse | None = None  # its head, once it came
        body: list[bytes] = []
        sent_twice = False
        try:
            async with asyncio.timeout(request.timeout_seconds):  # connect to the last byte
                try:
                    response = await _answered(session, request, url)
                except aiohttp.ClientConnectorError:
                    raise
                except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                    if request.method not in IDEMPOTENT_METHODS:
                        raise
                    # most often a kept connection the partner closed as the request left
                    sent_twice = True
                    response = await _answered(session, request, url)
                answered = response
                result = await _result(response, body)
        except (TargetRefused, TimeoutError, aiohttp.ClientError, OSError) as exc:
            release_frames(exc)  # they hold the request's body in a cycle (cycles.py)
            if answered is not None:
                result = _cut_short(answered.status, answered.headers.items(),
                                    answered.headers.get("Retry-After"), b"".join(body), exc,
                                    request.timeout_seconds)
            else:
                result = _failure(exc, request.timeout_seconds)
        return _said_twice(result, sent_twice)


def _verifying_context() -> ssl.SSLContext:
    """What aiohttp verifies with by default (connector.py): the system's trusted
    certificates, the host name checked, HTTP/1.1 offered by ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


def _may_go_again(request: OutboundRequest, dropped: Dropped) -> bool:
    """Sent again at once, on a new connection, after a connection closed before the
    answer's head: an idempotent request (aiohttp's rule, RFC 9112 9.3.1), and one with an
    `Idempotency-Key` (every delivery has one) that went on a kept connection from which not
    a byte came back. That is mostly a partner closing an idle connection as the request
    left, and Go's net/http sends such a request again in that case; a partner that did take
    it drops the copy by its key. Without this the attempt is recorded as failed and the
    message waits out a backoff."""
    return request.method in IDEMPOTENT_METHODS or (dropped.reused and dropped.silent and any(
        name.lower() == "idempotency-key" and value for name, value in request.headers))


def _said_twice(result: AttemptResult, sent_twice: bool) -> AttemptResult:
    return dataclasses.replace(result, sent_twice=True) if sent_twice else result


def _expects(headers: Iterable[tuple[str, str]]) -> bool:
    return any(name.lower() == "expect" for name, _ in headers)


async def _sent_by(client: Http1Client, request: OutboundRequest, url: URL) -> AttemptResult:
    """send() through http1.py, with the same rules as through aiohttp, and one more
    (_may_go_again); a request sent again says so (AttemptResult.sent_twice)."""
    loop = asyncio.get_running_loop()
    answer = Answer(loop.create_future())
    sent_twice = False
    try:
        async with asyncio.timeout(request.timeout_seconds):  # connect to the last byte
            try:
                await client.exchange(url, request.method, request.headers, request.body,
                                      answer)
            except Dropped as dropped:
                if not _may_go_again(request, dropped):
                    raise
                # most often a kept connection the partner closed as the request left; its
                # frames hold the first Answer (and the body) in a cycle: cycles.py
                release_frames(dropped)
                answer = Answer(loop.create_future())
                sent_twice = True
                await client.exchange(url, request.method, request.headers, request.body,
                                      answer, fresh=True)
    except (TargetRefused, TimeoutError, ExchangeError, OSError) as exc:
        # the answer's future holds the exception, whose traceback holds this frame and
        # exchange's (the answer, the request's bytes): a cycle, broken here so that the
        # body goes now, not at the collector's next run (cycles.py)
        release_frames(exc)
        exc.__traceback__ = None
        if answer.head:
            result = _cut_short(answer.status, answer.headers, answer.header("Retry-After"),
                                answer.prefix, exc, request.timeout_seconds)
        else:
            result = _failure(exc, request.timeout_seconds)
        return _said_twice(result, sent_twice)
    return AttemptResult(
        status_code=answer.status, retry_after=answer.header("Retry-After"),
        response=PartnerResponse.capture(answer.headers, answer.prefix,
                                         answer.size > BODY_LIMIT), sent_twice=sent_twice)


async def _answered(session: aiohttp.ClientSession, request: OutboundRequest,
                    url: URL) -> aiohttp.ClientResponse:
    """The request sent on a pooled connection and the answer's head read, by aiohttp's own
    request and response classes.

    ClientSession.request does the same behind a generic front (redirects, cookies, auth,
    proxies, middlewares, tracing) that a delivery uses none of; going around it took a fifth
    off the client's CPU a request (bench/clients.py). What the front does that a delivery
    needs is in send(): one retry of a dropped kept connection, and the timeout around it
    all. This reaches below aiohttp's documented API, which is why pyproject.toml holds
    aiohttp to one minor version and tests/integration/test_http_deliverer.py checks
    the wire."""
    req = aiohttp.ClientRequest(
        request.method, url, headers=list(request.headers),
        skip_auto_headers=_SKIP_AUTO_HEADERS, data=request.body,
        loop=asyncio.get_running_loop(), session=session)
    connector = session.connector
    if connector is None:
        raise RuntimeError("deliverer is not open")
    conn = await connector.connect(req, [], _NO_TIMEOUTS)
    if conn.protocol is not None and len(conn.protocol):
        # a kept connection on which the partner sent an answer nobody asked for: that
        # answer would be taken for this request's, so the connection is not used (once:
        # a partner that answers before it is asked, on every connection, gets its way)
        conn.close()
        conn = await connector.connect(req, [], _NO_TIMEOUTS)
    if conn.protocol is None:  # closed as it was handed over: like a dropped connection
        conn.close()
        raise aiohttp.ServerDisconnectedError()
    conn.protocol.set_response_params(skip_payload=req.method == "HEAD",
                                      read_until_eof=True, auto_decompress=False)
    waiting = req._continue  # set by aiohttp for the header, resolved by a 100
    timer = None
    try:
        response = await req.send(conn)  # the head is out; the body waits for `waiting`
        if waiting is not None:
            timer = asyncio.get_running_loop().call_later(
                EXPECT_CONTINUE_SECONDS, _go_on, waiting)
        try:
            await response.start(conn)
        except BaseException:
            response.close()
            raise
    except BaseException:
        conn.close()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return response


def _go_on(waiting: asyncio.Future[bool]) -> None:
    """No 100 came in time: the body goes out anyway."""
    if not waiting.done():
        waiting.set_result(True)


async def _result(response: aiohttp.ClientResponse, chunks: list[bytes]) -> AttemptResult:
    """What is kept of the answer: its head, and the first BODY_LIMIT bytes of its body
    (read into `chunks` as they come)."""
    try:
        prefix = await _read_prefix(response.content, BODY_LIMIT + 1, chunks)
        more = len(prefix) > BODY_LIMIT
        if more:  # read on a little, so that a short tail keeps the connection
            await response.content.read(RESPONSE_READ_LIMIT)
        result = AttemptResult(
            status_code=response.status,
            retry_after=response.headers.get("Retry-After"),
            response=PartnerResponse.capture(response.headers.items(), prefix, more))
    except BaseException:
        response.close()
        raise
    response.release()  # to the pool, when the answer was read to its end
    await response.wait_for_close()  # a body still going out (an early answer) is stopped
    return result
