"""The endpoints of the contract; each is a few lines over the Relay."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from notify_relay.api.openapi import errors
from notify_relay.api.problems import JSONResponse, problem
from notify_relay.api.replay import ReplayRequest
from notify_relay.api.schemas import (
    Health,
    MessageOut,
    MessagePage,
    ReplayOut,
    SubmitResponse,
)
from notify_relay.api.strict_json import StrictJsonRoute
from notify_relay.api.submission import Submission
from notify_relay.api.views import message_view, submit_view
from notify_relay.context import correlation_id
from notify_relay.domain.errors import (
    NotFound,
    NotifyRelayError,
    RateLimited,
)
from notify_relay.domain.message import MessageKey
from notify_relay.domain.status import Status
from notify_relay.domain.submission import ID_ALPHABET
from notify_relay.runtime import Runtime

router = APIRouter(route_class=StrictJsonRoute)
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=512)]
SenderQuery = Annotated[
    str | None,
    Query(alias="senderId", pattern=rf"^{ID_ALPHABET}{{1,64}}$",
          description="The sender, when the server has no API keys"),
]
MessageId = Annotated[str, Path(alias="messageId",
                                description="The message's id, chosen by its sender")]
# what any request with a body may get before its route runs (middleware.BodyGuardMiddleware)
BODY = (413, 415)
HOST_403 = ("`FORBIDDEN`: on a server without API keys, a `Host` that is not a loopback name "
            "or the listen address")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def _cid() -> str:
    return correlation_id.get() or ""


def _key(rt: Runtime, request: Request, message_id: str, sender_id: str | None) -> MessageKey:
    return MessageKey(sender_of(rt, request, sender_id), message_id)


def sender_of(rt: Runtime, request: Request, claimed: str | None) -> str:
    return rt.auth.sender_of(request.scope, request.headers.get("authorization"), claimed)


@router.post(
    "/v1/messages",
    status_code=202,
    response_model=SubmitResponse,
    response_description="Accepted: stored durably and queued for delivery",
    responses={200: {"model": SubmitResponse, "description": "Duplicate of an accepted message"},
               **errors(400, 401, 403, 409, *BODY, 422, 429, 500, 503, described={
                   409: "`IDEMPOTENCY_CONFLICT`: this `messageId` was already accepted with "
                        "a different `targetUrl`, `method`, `headers` or `body`",
                   415: "`UNSUPPORTED_MEDIA_TYPE`: the body is not labelled JSON "
                        "(`application/json` or `application/<name>+json`), or has no type",
               })},
    summary="Submit a notification",
)
async def submit(submission: Submission, request: Request) -> Response:
    rt = runtime(request)
    sender = sender_of(rt, request, submission.senderId)
    if rt.limiter is not None:
        wait = rt.limiter.acquire(sender, time.monotonic())
        if wait > 0:
            raise RateLimited(rt.limiter.retry_after_header(wait))
    accepted = await rt.relay.submit(submission.to_new_message(), sender, _cid())
    rt.relay.observer.submission("duplicate" if accepted.duplicate else "accepted")
    return JSONResponse(
        submit_view(accepted.message, duplicate=accepted.duplicate, correlation_id=_cid()),
        status_code=200 if accepted.duplicate else 202,
    )


@router.get("/v1/messages", response_model=MessagePage,
            responses=errors(400, 401, 403, 500, 503),
            summary="List the caller's messages, newest first")
async def list_messages(
    request: Request,
    sender_id: SenderQuery = None,
    status: Status | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    rt = runtime(request)
    page = await rt.relay.list(sender_of(rt, request, sender_id), status, limit, cursor)
    return JSONResponse({"items": [message_view(m) for m in page.items],
                         "nextCursor": page.next_cursor})


@router.get("/v1/messages/{messageId}", response_model=MessageOut,
            responses=errors(400, 401, 403, 404, 500, 503),
            summary="One message with its attempts")
async def get_message(
    message_id: MessageId, request: Request, sender_id: SenderQuery = None
) -> Response:
    rt = runtime(request)
    key = _key(rt, request, message_id, sender_id)
    return JSONResponse(message_view(await rt.relay.get(key)))


@router.post("/v1/messages/{messageId}/retry", status_code=202, response_model=MessageOut,
             response_description="Queued again, with a fresh attempt budget",
             responses=errors(400, 401, 403, 404, 409, *BODY, 500, 503, described={
                 409: "`INVALID_STATE`: the message is not `FAILED` or `CANCELLED`"}),
             summary="Send a FAILED or CANCELLED message again with a fresh budget")
async def retry_message(
    message_id: MessageId, request: Request, sender_id: SenderQuery = None
) -> Response:
    rt = runtime(request)
    key = _key(rt, request, message_id, sender_id)
    return JSONResponse(message_view(await rt.relay.retry(key, _cid())), status_code=202)


@router.post("/v1/messages/{messageId}/cancel", response_model=MessageOut,
             response_description="Cancelled: no attempt starts after this answer",
             responses=errors(400, 401, 403, 404, 409, *BODY, 500, 503, described={
                 409: "`INVALID_STATE`: the message is `DELIVERING` (an attempt is in "
                      "flight) or final"}),
             summary="Stop a QUEUED or RETRYING message: no attempt starts after the answer")
async def cancel_message(
    message_id: MessageId, request: Request, sender_id: SenderQuery = None
) -> Response:
    rt = runtime(request)
    key = _key(rt, request, message_id, sender_id)
    return JSONResponse(message_view(await rt.relay.cancel(key, _cid())))


@router.post("/v1/messages/replay", status_code=202, response_model=ReplayOut,
             response_description="How many were queued again, and whether more match",
             responses=errors(400, 401, 403, *BODY, 500, 503),
             summary="Retry by hand the FAILED messages that match")
async def replay_messages(
    request: Request, selection: ReplayRequest | None = None, sender_id: SenderQuery = None
) -> Response:
    rt = runtime(request)
    selection = selection or ReplayRequest()
    since, until = selection.window()
    result = await rt.relay.replay(sender_of(rt, request, sender_id), selection.destination,
                                   since, until, selection.limit, _cid())
    return JSONResponse({"replayed": result.replayed, "more": result.more}, status_code=202)


@router.get("/healthz", response_model=Health, responses=errors(403, described={403: HOST_403}),
            summary="Liveness")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Health,
            responses=errors(403, 503, described={
                403: HOST_403,
                503: "`SYSTEM_ERROR`: not ready: the store or the queue does not answer"}),
            summary="Readiness: the store and the queue answer")
async def readyz(request: Request) -> Response:
    try:
        await runtime(request).check_ready()
    except Exception as exc:
        detail = exc.message if isinstance(exc, NotifyRelayError) else type(exc).__name__
        return problem(503, "SYSTEM_ERROR", f"not ready: {detail}",
                       headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}},
                       **errors(401, 403, 404, 500, described={
                           401: "`UNAUTHENTICATED`: no valid API key, from a server with API "
                                "keys started with `--metrics-need-key`",
                           403: HOST_403,
                           404: "`NOT_FOUND`: this deployment does not serve metrics"})})
async def metrics(request: Request) -> Response:
    rt = runtime(request)
    if rt.metrics is None:
        raise NotFound("metrics are not served by this deployment")
    if rt.metrics_need_key and rt.auth.enabled:
        sender_of(rt, request, None)  # any valid key: counts are not per sender
    body = rt.metrics.render(await rt.relay.queue.depth())
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
