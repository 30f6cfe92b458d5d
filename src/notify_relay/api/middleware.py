"""Pure ASGI middleware: correlation ids, and the request body's size and type.

The body guard reads at most the limit into memory; beyond it the rest is discarded (up to
a bound, so that well-behaved clients see the 413 instead of a reset) and never buffered.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notify_relay.api.problems import problem
from notify_relay.context import correlation_id

log = logging.getLogger("notify_relay.api")
MAX_BODY_BYTES = 6 * 1024 * 1024
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
_VALID_CORRELATION_ID = re.compile(r"[\x21-\x7e]{1,200}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class CorrelationIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-correlation-id")
        cid = given if given and _VALID_CORRELATION_ID.fullmatch(given) else str(uuid.uuid4())
        token = correlation_id.set(cid)

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
            await problem(500, "SYSTEM_ERROR",
                          "internal error; retrying with the same messageId is safe"
                          )(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)


class RejectedSubmissionsMiddleware:
    """Counts submissions answered with an error, whichever layer refused them."""

    def __init__(self, app: ASGIApp, count: Callable[[int], None]) -> None:
        self.app = app
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/messages":
            await self.app(scope, receive, send)
            return

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.count(message["status"])
            await send(message)

        await self.app(scope, receive, send_counting)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


class BodyGuardMiddleware:
    """413 over `limit` bytes, 415 for a body that is not JSON.

    A body sent with no Content-Type, or with curl's default form type, that starts like a
    JSON document is taken as JSON, so `curl -d '{...}'` works as the README shows.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_LIMIT_BYTES:
                await _drain(receive, DRAIN_LIMIT_BYTES)
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.limit:
                if more:
                    await _drain(receive, DRAIN_LIMIT_BYTES - size)
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        if body:
            content_type = headers.get("content-type", "")
            if not _is_json(content_type):
                looks_json = body.lstrip()[:1] in (b"{", b"[")
                lenient = content_type == "" or content_type.lower().startswith(
                    "application/x-www-form-urlencoded")
                if not (lenient and looks_json):
                    await problem(415, "UNSUPPORTED_MEDIA_TYPE",
                                  "the request body must be JSON (Content-Type: application/json)"
                                  )(scope, receive, send)
                    return
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "PAYLOAD_TOO_LARGE",
                           f"the request body is over the limit of {self.limit} bytes")
        await response(scope, receive, send)


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
