"""RFC 9457 problem documents for every failure, with the contract's code and correlation id."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import Match

from notify_relay.context import correlation_id, request_line
from notify_relay.cycles import release_frames
from notify_relay.domain.errors import (
    FieldError,
    NotifyRelayError,
    RateLimited,
    StoreUnavailable,
    ValidationFailed,
)

log = logging.getLogger("notify_relay.api")
PROBLEM_JSON = "application/problem+json"
ASKED_HEAD = "notify_relay.asked_head"  # in the scope of a HEAD passed on as GET


class JSONResponse(_StarletteJSON):
    """JSON rendered by orjson: several times faster than json.dumps on our documents."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)

_CODES_BY_STATUS = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
                    415: "UNSUPPORTED_MEDIA_TYPE"}


def problem(
    status: int,
    code: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "correlationId": correlation_id.get() or "",
    }
    if errors is not None:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    if status == 401:  # RFC 9110: a 401 names the scheme that would be accepted
        headers = {"WWW-Authenticate": 'Bearer realm="notify-relay"', **(headers or {})}
    _log_refusal(status, code, detail)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _log_refusal(status: int, code: str, detail: str) -> None:
    """Every refused request leaves a line, so that a sender's "it was rejected" can be
    found by its correlation id; a 5xx is a warning, the rest are the caller's doing."""
    level = logging.WARNING if status >= 500 else logging.INFO
    if not log.isEnabledFor(level):
        return
    method, path = request_line.get() or ("", "")
    log.log(level, "request refused", extra={
        "status": status, "code": code, "detail": detail[:500], "method": method,
        "path": path[:300], "correlationId": correlation_id.get()})


def problem_for(exc: NotifyRelayError) -> JSONResponse:
    errors = exc.errors if isinstance(exc, ValidationFailed) else None
    headers = ({"Retry-After": str(exc.retry_after_seconds)}
               if isinstance(exc, RateLimited | StoreUnavailable) else None)
    return problem(exc.status, exc.code, exc.message, errors, headers)


def _field(error: dict[str, Any]) -> str:
    """The dotted path of the field; "" for the whole body (malformed JSON: the character
    offset in its location is not a field)."""
    if error["type"] == "json_invalid":
        return ""
    parts = [str(p) for p in error["loc"]
             if p not in ("body", "query", "path", "header", "[key]")]
    return ".".join(parts)


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        return f"malformed JSON: {error.get('ctx', {}).get('error', 'invalid')}"
    if error["type"] == "missing" and tuple(error["loc"]) == ("body",):
        return "a JSON request body is required"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def field_errors(errors: Sequence[Any]) -> list[FieldError]:
    """pydantic's errors as the contract's: dotted paths, plain messages."""
    return [FieldError(_field(e), _message(e)) for e in errors]


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    return problem_for(ValidationFailed(field_errors(exc.errors())))


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path answers. Each is tried: the routes of an
    included router are not among the app's routes, so their `methods` cannot be read."""
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                   for route in request.app.routes)]


def domain_problem(exc: NotifyRelayError) -> JSONResponse:
    """The answer to a refusal of the domain, logged by its gravity: a fault of ours with
    its traceback; an unavailable store, an expected state, only in the refusal's own line
    (problem()), which names the cause (a second line of its own said the same)."""
    if exc.status >= 500 and not isinstance(exc, StoreUnavailable):
        log.error("request failed", exc_info=exc)
    return problem_for(exc)


def install(app: FastAPI) -> None:
    async def on_domain(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotifyRelayError)
        response = domain_problem(exc)  # logged first, with its frames' lines
        release_frames(exc)
        return response

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        release_frames(exc)  # the body of a refused submission goes at once (cycles.py)
        return validation_problem(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        release_frames(exc)
        code = _CODES_BY_STATUS.get(exc.status_code, "HTTP_ERROR")
        detail = "no such route" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods
            allowed = _allowed_methods(request)
            if "GET" in allowed:  # HeadAsGetMiddleware answers HEAD wherever GET is
                allowed.insert(allowed.index("GET") + 1, "HEAD")
            headers["Allow"] = ", ".join(allowed)
            asked = "HEAD" if request.scope.get(ASKED_HEAD) else request.method
            detail = f"{asked} is not allowed here; use {' or '.join(allowed)}"
        return problem(exc.status_code, code, detail, headers=headers or None)

    app.add_exception_handler(NotifyRelayError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
