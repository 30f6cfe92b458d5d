"""The destinations endpoints (contract v1.1): list, read and change, per sender."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from notify_relay.api.openapi import errors
from notify_relay.api.problems import JSONResponse
from notify_relay.api.routes import BODY, Cursor, Limit, SenderQuery, runtime, sender_of
from notify_relay.api.schemas import DestinationOut, DestinationPageOut
from notify_relay.api.strict_json import StrictJsonRoute
from notify_relay.api.submission import json_integer
from notify_relay.api.views import destination_view
from notify_relay.domain.destination import (
    LOOKUP_NAME_PATTERN,
    MAX_CONCURRENCY_LIMIT,
    BreakerState,
    DestinationKey,
)
from notify_relay.domain.errors import NotFound
from notify_relay.gate import UNSET

router = APIRouter(route_class=StrictJsonRoute)
Name = Annotated[str, Path(pattern=LOOKUP_NAME_PATTERN, description=(
    "the destination: its custom name (1-128), or the target's host:port (up to 260)"))]
NOT_FOUND = ("`NOT_FOUND`: the caller's sender has no such destination (or the name holds "
             "a `/`: no such route)")
NO_ROUTE = ("`NOT_FOUND`: a name that holds a `/` (not a valid name) is no route; any valid "
            "name is answered, a destination not used yet included")
MaxConcurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_LIMIT),
                           BeforeValidator(json_integer)]


class DestinationPatch(BaseModel):
    """Body of PATCH /v1/destinations/{destination}; a field left out stays as it is,
    `null` restores the server default."""

    model_config = ConfigDict(strict=True, extra="forbid")

    paused: bool | None = None
    maxConcurrency: MaxConcurrency | None = None
    ratePerSecond: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)] | None = None


def _key(request: Request, name: str, sender_id: str | None) -> DestinationKey:
    return DestinationKey(sender_of(runtime(request), request, sender_id), name)


@router.get("/v1/destinations", response_model=DestinationPageOut,
            responses=errors(400, 401, 403, 500, 503),
            summary="List the caller's destinations, by name")
async def list_destinations(
    request: Request,
    sender_id: SenderQuery = None,
    state: BreakerState | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    rt = runtime(request)
    page = await rt.relay.gate.list(sender_of(rt, request, sender_id), state, limit, cursor)
    return JSONResponse({"items": [destination_view(v) for v in page.items],
                         "nextCursor": page.next_cursor})


@router.get("/v1/destinations/{destination}", response_model=DestinationOut,
            responses=errors(400, 401, 403, 404, 500, 503, described={404: NOT_FOUND}),
            summary="One destination: breaker, limits and backlog")
async def get_destination(
    destination: Name, request: Request, sender_id: SenderQuery = None
) -> Response:
    gate = runtime(request).relay.gate
    key = _key(request, destination, sender_id)
    found = await gate.get(key)
    if found is None:
        raise NotFound(f"no destination {destination} for sender {key.sender_id}")
    return JSONResponse(destination_view(await gate.view(found)))


@router.patch("/v1/destinations/{destination}", response_model=DestinationOut,
              responses=errors(400, 401, 403, 404, *BODY, 500, 503, described={404: NO_ROUTE}),
              summary="Pause, resume, cap or rate-limit a destination")
async def patch_destination(
    destination: Name, changes: DestinationPatch, request: Request,
    sender_id: SenderQuery = None,
) -> Response:
    gate = runtime(request).relay.gate
    key = _key(request, destination, sender_id)
    named = changes.model_fields_set
    dest = await gate.configure(
        key,
        paused=(bool(changes.paused) if "paused" in named else None),
        max_concurrency=changes.maxConcurrency if "maxConcurrency" in named else UNSET,
        rate_per_second=changes.ratePerSecond if "ratePerSecond" in named else UNSET,
    )
    return JSONResponse(destination_view(await gate.view(dest)))
