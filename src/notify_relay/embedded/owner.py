"""What the API process forwards to the owner process, over the owner's Unix socket.

Destinations and metrics live in the owner: in-flight counts, breaker statistics not yet
written, a PATCH that must reach the gate that admits attempts, the delivery counters. The
API process forwards those requests whole (the owner authenticates them as it would any
other) and adds its own submission counters to the owner's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from starlette.types import ASGIApp, Receive, Scope, Send

from notify_relay.api.problems import problem
from notify_relay.domain.errors import StoreUnavailable

log = logging.getLogger("notify_relay.api")
MAX_FORWARDED_BODY = 64 * 1024  # a PATCH of a destination's settings is a few bytes
FORWARD_TIMEOUT_SECONDS = 30.0
# hop-by-hop: the connection to the owner is not the client's
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                  b"upgrade", b"te", b"trailer", b"proxy-connection"})


def forwarded(path: str) -> bool:
    return path == "/metrics" or path == "/v1/destinations" or path.startswith(
        "/v1/destinations/")


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
                      body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Raises StoreUnavailable when the owner does not answer."""
        try:
            async with self._client().request(method, f"http://owner{target}",
                                              headers=headers, data=body or None,
                                              allow_redirects=False) as response:
                content = await response.read()
                return response.status, [
                    (name, value) for name, value in response.raw_headers
                    if name.lower() not in _HOP], content
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the delivery process does not answer: {exc}") from exc

    async def check_ready(self) -> None:
        # a loopback name: an owner without API keys answers no other (KeylessGuard)
        status, _, _ = await self.request("GET", "/readyz", [("Host", "localhost")], b"")
        if status != 200:
            raise StoreUnavailable("the delivery process is not ready")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ForwardToOwner:
    """Pure ASGI middleware, outermost: the owner's routes go there untouched."""

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
        target = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in scope["headers"] if name.lower() not in _HOP]
        try:
            status, answer_headers, content = await self._owner.request(
                scope["method"], target, headers, bytes(body))
        except StoreUnavailable as exc:
            log.warning("request refused: the delivery process does not answer",
                        extra={"error": exc.message})
            await problem(503, exc.code, exc.message,
                          headers={"Retry-After": "1"})(scope, receive, send)
            return
        if scope["path"] == "/metrics" and status == 200:
            content += self._own_metrics()
        answer_headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer_headers})
        await send({"type": "http.response.body", "body": content})
