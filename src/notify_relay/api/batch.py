"""POST /v1/messages/batch (contract v1.1): up to 100 submissions, each judged on its own.

The body is parsed as a batch first: malformed JSON, no `messages`, or more than 100 is
one 400 for the whole request. Each item is then validated as POST /v1/messages would
validate it and answered in its place, in request order; every item answered 202 is
stored durably before the response. A store or queue failure fails the whole request
(5xx): sending the same batch again is safe, since each item is idempotent by its id.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notify_relay.api.middleware import count_rejected
from notify_relay.api.openapi import errors
from notify_relay.api.problems import JSONResponse, field_errors
from notify_relay.api.routes import BODY, runtime
from notify_relay.api.schemas import BatchOut
from notify_relay.api.strict_json import StrictJsonRoute
from notify_relay.api.submission import Submission
from notify_relay.api.views import submit_view
from notify_relay.context import correlation_id
from notify_relay.domain.errors import (
    FieldError,
    NotifyRelayError,
    RateLimited,
    ValidationFailed,
)
from notify_relay.domain.submission import NewMessage
from notify_relay.service import Accepted

router = APIRouter(route_class=StrictJsonRoute)
MAX_ITEMS = 100


class Batch(BaseModel):
    """Items stay JSON here: each is validated on its own, as a submission."""

    model_config = ConfigDict(strict=True, extra="forbid")

    # Any, not JsonValue: its depth limit counts the batch's own levels, so an item as deep
    # as a single submission may be would fail the whole batch (the strict JSON parser has
    # already bounded the depth, and each item is validated as a submission below)
    messages: Annotated[list[Any], Field(
        min_length=1, max_length=MAX_ITEMS,
        json_schema_extra={"items": {"$ref": "#/components/schemas/Submission"}})]


def _item_problem(exc: NotifyRelayError, raw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"httpStatus": exc.status, "code": exc.code, "detail": exc.message}
    if isinstance(exc, ValidationFailed):
        item["errors"] = [{"field": e.field, "message": e.message} for e in exc.errors]
    message_id = raw.get("messageId") if isinstance(raw, dict) else None
    if isinstance(message_id, str):
        item["messageId"] = message_id
    return item


@router.post(
    "/v1/messages/batch",
    response_model=BatchOut,
    response_description="Each item's answer, in request order",
    responses=errors(400, 401, 403, *BODY, 500, 503, described={
        400: "`VALIDATION_ERROR`: not a batch (malformed JSON, no `messages`, none or more "
             "than 100); an invalid item is answered in its place instead",
        403: "`FORBIDDEN`: on a server without keys, a `Host` that is not a loopback name "
             "or the listen address, or a request from another `Origin`; an item whose "
             "`senderId` is not the key's is answered 403 in its place instead",
    }),
    summary="Submit 1-100 notifications in one request",
)
async def submit_batch(batch: Batch, request: Request) -> Response:
    rt = runtime(request)
    cid = correlation_id.get() or ""
    answers: list[dict[str, Any] | None] = [None] * len(batch.messages)
    valid: list[tuple[int, NewMessage, str]] = []
    retry_after: int | None = None  # the longest wait an item over the rate was told
    for index, raw in enumerate(batch.messages):
        try:
            if not isinstance(raw, dict):
                raise ValidationFailed([FieldError("", "an item must be a JSON object: a "
                                                       "submission as for POST /v1/messages")])
            try:
                submission = Submission.model_validate(raw)
            except ValidationError as exc:
                raise ValidationFailed(field_errors(exc.errors())) from None
            sender = rt.auth.sender_of(request.scope, request.headers.get("authorization"),
                                       submission.senderId)
            if rt.limiter is not None:
                wait = rt.limiter.acquire(sender, time.monotonic())
                if wait > 0:
                    raise RateLimited(rt.limiter.retry_after_header(wait))
            valid.append((index, submission.to_new_message(), sender))
        except NotifyRelayError as exc:
            answers[index] = _item_problem(exc, raw)
            if isinstance(exc, RateLimited):
                retry_after = max(retry_after or 0, exc.retry_after_seconds)
    results = await rt.relay.submit_many([(new, sender) for _, new, sender in valid], cid)
    for (index, _, _), result in zip(valid, results, strict=True):
        if isinstance(result, Accepted):
            answers[index] = {**submit_view(result.message, duplicate=result.duplicate,
                                            correlation_id=cid),
                              "httpStatus": 200 if result.duplicate else 202}
        else:
            answers[index] = _item_problem(result, batch.messages[index])
    observer = rt.relay.observer  # Prometheus embedded, EMF metrics on AWS
    for answer in answers:  # each item as a submission of its own
        status = answer["httpStatus"] if answer is not None else 500
        if status in (200, 202):
            observer.submission("duplicate" if status == 200 else "accepted")
        else:  # a problem's status (4xx, 5xx)
            count_rejected(observer, status)
    # the contract pairs RATE_LIMITED with Retry-After; an item has no field for it
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"items": answers}, headers=headers)
