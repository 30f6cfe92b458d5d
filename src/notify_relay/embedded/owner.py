"""What the API process forwards to the owner process, over the owner's Unix socket.

Destinations and metrics live in the owner: in-flight counts, breaker statistics not yet
written, a PATCH that must reach the gate that admits attempts, the delivery counters. The
API process forwards those requests whole (the owner authenticates them as it would any
other) and adds its own submission counters to the owner's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote, quote_from_bytes

import aiohttp
import yarl
from starlette.types import ASGIApp, Receive, Scope, Send

from notify_relay.api.problems import problem
from notify_relay.context import correlation_id
from notify_relay.domain.errors import StoreUnavailable

log = logging.getLogger("notify_relay.api")
MAX_FORWARDED_BODY = 64 * 1024  # a PATCH of a destination's settings is a few bytes
FORWARD_TIMEOUT_SECONDS = 10.0  # the owner answers these in milliseconds
READY_TIMEOUT_SECONDS = 2.0
# hop-by-hop (the connection to the owner is not the client's), the correlation id (this
# process's, sent on), and what this process's server adds itself
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                  b"upgrade", b"te", b"trailer", b"proxy-connection", b"x-correlation-id",
                  b"date", b"server"})


def forwarded(path: str) -> bool:
    """The owner's routes, dot segments or not: sent on as they came (as_sent), they are
    routed there as one process routes them. A destination may be named `.` or `..`; kept
    here, a PATCH of `..` went to this process's own gate, and the owner, the one that
    admits attempts, wrote its record over it (helper-75). `/v1/destinations/../messages`
    is no route of the owner's either (404)."""
    return path in ("/metrics", "/v1/destinations") or path.startswith("/v1/destinations/")


_PRINTABLE = bytes(range(0x21, 0x7F))


def as_sent(target: str) -> yarl.URL:
    """The owner's URL for a request target as this process received it (its bytes as
    latin-1 text): not normalised (aiohttp's URLs drop `.` and `..` segments, and decode
    `%2E`), any byte beyond printable ASCII percent-encoded, as a request line needs (the
    parser here refuses those before: helper-76)."""
    raw = target.encode("latin-1")
    return yarl.URL("http://owner" + quote_from_bytes(raw, safe=_PRINTABLE), encoded=True)


class OwnerLink:
    """An HTTP client of the owner's socket; made in the API process's event loop."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self._socket_path),
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._session

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes, seconds: float = FORWARD_TIMEOUT_SECONDS,
                      ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Raises StoreUnavailable when the owner does not answer."""
        try:
            async with self._client().request(
                    method, as_sent(target), headers=headers, data=body or None,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                content = await response.read()
                return response.status, [
                    (name, value) for name, value in response.raw_headers
                    if name.lower() not in _HOP or (
                        method == "HEAD" and name.lower() == b"content-length")], content
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(
                f"the owner process (delivery) does not answer: {reason}") from exc

    async def check_ready(self) -> None:
        # a loopback name: an owner without API keys answers no other (KeylessGuard)
        status, _, _ = await self.request("GET", "/readyz", [("Host", "localhost")], b"",
                                          seconds=READY_TIMEOUT_SECONDS)
        if status != 200:
            raise StoreUnavailable("the owner process (delivery) is not ready")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ForwardToOwner:
    """Pure ASGI middleware, just inside the correlation id's: the owner's routes go there
    untouched, with this request's correlation id."""

    def __init__(self, app: ASGIApp, owner: OwnerLink,
                 own_metrics: Callable[[], bytes]) -> None:
        self.app = app
        self._owner = owner
        self._own_metrics = own_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not forwarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_FORWARDED_BODY:
                await problem(413, "PAYLOAD_TOO_LARGE",
                              f"the request body is over {MAX_FORWARDED_BODY} bytes"
                              )(scope, receive, send)
                return
        target = (scope["raw_path"].decode("latin-1") if scope.get("raw_path")
                  else quote(scope["path"]))  # a server that gives no raw path
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in scope["headers"] if name.lower() not in _HOP]
        headers.append(("X-Correlation-Id", correlation_id.get() or ""))
        try:
            status, answer_headers, content = await self._owner.request(
                scope["method"], target, headers, bytes(body))
        except StoreUnavailable as exc:
            log.warning("request refused: the owner process (delivery) does not answer",
                        extra={"error": exc.message})
            await problem(503, exc.code, exc.message,
                          headers={"Retry-After": "1"})(scope, receive, send)
            return
        if scope["path"] == "/metrics" and status == 200:
            content += self._own_metrics()
        if scope["method"] != "HEAD":
            answer_headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer_headers})
        await send({"type": "http.response.body", "body": content})
