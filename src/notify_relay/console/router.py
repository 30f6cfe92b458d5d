"""The console's routes: its page and static files, and the JSON it needs beyond the API.

Every action of the console (retry, cancel, replay, pause, resume) and every read the
contract has (one message, the destinations) goes through the JSON API from the browser.
The routes under /console/api/ add what the API lacks: counts by status, deliveries and
failures per minute, and a list filtered by destination, id and time. They authenticate
exactly as the API does and answer errors as problem documents.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from functools import cache
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime

from notify_relay.api.problems import JSONResponse
from notify_relay.api.routes import Cursor, Limit, SenderQuery, runtime, sender_of
from notify_relay.api.strict_json import StrictJsonRoute
from notify_relay.api.views import message_view, rfc3339
from notify_relay.clock import utcnow
from notify_relay.console.reads import ConsoleReads, MessageFilter
from notify_relay.domain.destination import LOOKUP_NAME_PATTERN
from notify_relay.domain.errors import NotFound
from notify_relay.domain.status import Status
from notify_relay.domain.submission import ID_ALPHABET

# script-src 'self': no inline script; style-src 'self': no inline style; nothing is
# fetched from anywhere else, and no other site may frame the console
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
STATIC_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
IdPrefix = Annotated[str | None, Query(alias="messageId", pattern=rf"^{ID_ALPHABET}{{1,128}}$",
                                       description="the start of the message id")]
DestinationQuery = Annotated[str | None, Query(pattern=LOOKUP_NAME_PATTERN)]
Time = Annotated[AwareDatetime | None, Query()]
TimeField = Annotated[Literal["created", "updated"], Query(alias="timeField")]
Minutes = Annotated[int, Query(ge=1, le=1440)]


@cache
def _static(name: str) -> bytes:
    """A file of the console's static folder, read once, when first asked for."""
    return resources.files("notify_relay.console").joinpath("static", name).read_bytes()


def _file(name: str, media_type: str) -> Response:
    return Response(_static(name), media_type=media_type, headers=SECURITY_HEADERS)


def console_router(reads: ConsoleReads) -> APIRouter:
    """The console over `reads`; not part of the contract, so not in /openapi.json."""
    router = APIRouter(route_class=StrictJsonRoute, include_in_schema=False)

    @router.get("/console")
    @router.get("/console/")
    async def page() -> Response:
        return _file("index.html", "text/html; charset=utf-8")

    @router.get("/console/static/{name}")
    async def static(name: str) -> Response:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise NotFound(f"no console file {name}")
        return _file(name, media_type)

    @router.get("/console/api/session")
    async def session(request: Request, sender_id: SenderQuery = None) -> Response:
        """Who the console is talking as; a 401 asks the page for a key."""
        rt = runtime(request)
        sender = sender_of(rt, request, sender_id)
        return JSONResponse({"senderId": sender, "keys": rt.auth.enabled},
                            headers=SECURITY_HEADERS)

    @router.get("/console/api/counts")
    async def counts(request: Request, sender_id: SenderQuery = None) -> Response:
        sender = sender_of(runtime(request), request, sender_id)
        found = await reads.counts(sender)
        by_status = {status.value: 0 for status in Status} | dict(found)
        return JSONResponse({"counts": by_status, "total": sum(by_status.values())},
                            headers=SECURITY_HEADERS)

    @router.get("/console/api/activity")
    async def activity(request: Request, sender_id: SenderQuery = None,
                       minutes: Minutes = 60) -> Response:
        """Deliveries and failures of each of the last `minutes` minutes, this one last."""
        sender = sender_of(runtime(request), request, sender_id)
        now = utcnow().astimezone(UTC)
        first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
        found = {m.minute: m for m in await reads.per_minute(sender, first)}
        series = []
        for i in range(minutes):
            minute = first + timedelta(minutes=i)
            counted = found.get(minute)
            series.append({"minute": rfc3339(minute),
                           "delivered": counted.delivered if counted else 0,
                           "failed": counted.failed if counted else 0})
        return JSONResponse({"since": rfc3339(first), "until": rfc3339(now), "minutes": series},
                            headers=SECURITY_HEADERS)

    @router.get("/console/api/messages")
    async def messages(
        request: Request,
        sender_id: SenderQuery = None,
        status: Status | None = None,
        destination: DestinationQuery = None,
        id_prefix: IdPrefix = None,
        since: Time = None,
        until: Time = None,
        time_field: TimeField = "created",
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Response:
        """The caller's messages that match, newest first; paged as GET /v1/messages."""
        sender = sender_of(runtime(request), request, sender_id)
        where = MessageFilter(status=status, destination=destination, id_prefix=id_prefix,
                              since=since, until=until, time_field=time_field)
        page = await reads.messages(sender, where, limit, cursor)
        return JSONResponse({"items": [message_view(m) for m in page.items],
                             "nextCursor": page.next_cursor}, headers=SECURITY_HEADERS)

    return router
