"""Pure ASGI middleware: correlation ids, and the request body's size and type.

The body guard reads at most the limit into memory; beyond it the rest is discarded (up to
a bound, so that well-behaved clients see the 413 instead of a reset) and never buffered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notify_relay.api.problems import ASKED_HEAD, JSONResponse, problem, problem_for
from notify_relay.context import correlation_id, new_correlation_id, request_line
from notify_relay.domain.errors import NotifyRelayError
from notify_relay.ports import Observer

log = logging.getLogger("notify_relay.api")
MAX_BODY_BYTES = 6 * 1024 * 1024
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
# bodies being read, all requests together: twenty 6 MiB bodies sent slowly held 116 MiB
BUFFER_BUDGET_BYTES = 64 * 1024 * 1024
# an RFC 9110 field value in ASCII: visible characters, spaces and tabs between them
_VALID_CORRELATION_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]{0,198}[\x21-\x7e])?")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SUBMISSION_PATHS = frozenset({"/v1/messages", "/v1/messages/batch"})


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives a body already read, whole, then hands over to `receive`."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def valid_correlation_id(given: str | None) -> str | None:
    """A caller's correlation id as it is sent back: visible ASCII, with spaces or tabs
    inside (`order 42` was replaced by a new id), at most 200 characters (it goes into a
    response header, every log line and the partner's request), or None."""
    if given is None:
        return None
    given = given.strip(" \t")  # not part of a field's value (RFC 9110 5.5); httptools
    return given if _VALID_CORRELATION_ID.fullmatch(given) else None  # keeps the tail


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header `name` (lower case, as the server gives them), as
    Headers(scope=scope).get finds it, without building Headers for each request."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def is_submission(scope: Scope) -> bool:
    """POST /v1/messages: one submission (the batch has a path of its own)."""
    return bool(scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] == "/v1/messages")


def internal_error() -> JSONResponse:
    """The answer to an unexpected failure (plain_submit.py answers its own the same way)."""
    return problem(500, "SYSTEM_ERROR", "internal error; retrying with the same messageId is safe")


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-correlation-id")
        cid = valid_correlation_id(given) or new_correlation_id()
        token = correlation_id.set(cid)
        line_token = request_line.set((scope["method"], scope["path"]))

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)["X-Correlation-Id"] = cid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Handled here, inside the correlation id, rather than by Starlette's outermost
            # error middleware, so that a 500 is a problem document like every other error.
            log.exception("unexpected failure")
            if started:
                raise
            await internal_error()(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
            request_line.reset(line_token)


class HeadAsGetMiddleware:
    """HEAD is GET without its body, which every general-purpose server must support
    (RFC 9110 9.1): a health check by HEAD got 405, as FastAPI routes take GET alone. The
    app below sees GET; uvicorn, which keeps the request's own scope, sends the head of
    GET's answer (its Content-Length too) and no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET", ASKED_HEAD: True}
        await self.app(scope, receive, send)


def count_rejected(observer: Observer, status: int) -> None:
    """Counts a submission answered with a status of 400 or more as rejected: for
    RejectedSubmissionsMiddleware, plain_submit, and a batch for each item."""
    if status >= 400:
        observer.submission("rejected", str(status))


class RejectedSubmissionsMiddleware:
    """Counts submissions answered with an error, whichever layer refused them."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_submission(scope):
            await self.app(scope, receive, send)
            return

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                count_rejected(self.observer, message["status"])
            await send(message)

        await self.app(scope, receive, send_counting)


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


class BodyGuardMiddleware:
    """413 over `limit` bytes; 415 for a body that is not labelled JSON, and for a
    submission of any kind that is not (contract v1.1).

    A web page can make a browser send a form or text/plain body anywhere without asking
    (no CORS preflight); it cannot label a cross-origin body application/json without one.
    The caller's key is checked before the body is read, and all bodies being read share
    a budget: beyond it a 503, so that clients together cannot make the server hold more.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES,
                 authenticate: Callable[[Scope], object] | None = None,
                 budget: int = BUFFER_BUDGET_BYTES) -> None:
        """`authenticate` raises for a caller without a valid key."""
        self.app = app
        self.limit = limit
        self.authenticate = authenticate
        self.budget = budget
        self.buffered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if self.authenticate is not None:
            try:
                self.authenticate(scope)
            except NotifyRelayError as exc:
                await problem_for(exc)(scope, receive, send)
                return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_LIMIT_BYTES and not await _drain(receive,
                                                                       DRAIN_LIMIT_BYTES):
                return  # the client went, or timed out (a 408): no 413 to send, nor to log
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                self.buffered += len(chunk)
                more = message.get("more_body", False)
                if size > self.limit:
                    if more and not await _drain(receive, DRAIN_LIMIT_BYTES - size):
                        return
                    await self._too_large(scope, receive, send)
                    return
                if self.buffered > self.budget:
                    await problem(503, "SYSTEM_ERROR", "too many large requests at once; "
                                  "retry shortly", headers={"Retry-After": "1"}
                                  )(scope, receive, send)
                    return
                chunks.append(chunk)
        finally:
            self.buffered -= size
        body = b"".join(chunks)
        submission = scope["method"] == "POST" and scope["path"] in _SUBMISSION_PATHS
        if (body or submission) and not is_json(header(scope, b"content-type") or ""):
            await problem(415, "UNSUPPORTED_MEDIA_TYPE",
                          "the request body must be JSON (Content-Type: application/json)"
                          )(scope, receive, send)
            return

        await self.app(scope, replaying(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "PAYLOAD_TOO_LARGE",
                           f"the request body is over the limit of {self.limit} bytes")
        await response(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and drop up to `budget` bytes of the body; False if the client went first."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return True


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(host: str) -> str:
    """`name` of a Host header `name:port`, brackets kept around an IPv6 address."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class KeylessGuard:
    """Without API keys, only this machine's own clients: a request whose Host is not a
    loopback name or the listen address is refused (DNS rebinding: a page on another name
    that resolves here), and so is a state-changing request whose Origin is another origin
    (a page's form or fetch). With keys, the key decides and there is no such guard."""

    def __init__(self, listen_host: str) -> None:
        allowed = set(_LOOPBACK_NAMES)
        if listen_host not in ("0.0.0.0", "::", ""):  # noqa: S104 - a comparison, no bind
            allowed.add(listen_host.lower())
            allowed.add(f"[{listen_host.lower()}]")
        self.allowed = frozenset(allowed)

    def refusal(self, scope: Scope) -> str | None:
        """Why this request is refused (a 403's detail), or None."""
        host = (header(scope, b"host") or "").lower()
        if _host_name(host) not in self.allowed:
            return ("this server has no API keys and answers only requests addressed to a "
                    "loopback name (localhost, 127.0.0.1, [::1]) or its listen address")
        origin = header(scope, b"origin")
        # an origin is scheme, name and port: https://this-host is another one (uvicorn
        # takes no forwarded scheme here, proxy_headers off: the scheme is the socket's)
        if scope["method"] in _STATE_CHANGING and origin is not None and (
                origin.lower() != f"{scope['scheme']}://{host}"):
            return ("this server has no API keys: a request from another origin (a web "
                    "page) may not change anything")
        return None


class KeylessGuardMiddleware:
    """KeylessGuard's 403, installed when the server has no API keys."""

    def __init__(self, app: ASGIApp, guard: KeylessGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.guard.refusal(scope)
        if refused is not None:
            await problem(403, "FORBIDDEN", refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)
