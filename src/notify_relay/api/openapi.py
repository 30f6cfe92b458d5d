"""What /openapi.json says beyond what FastAPI reads from the routes, and /docs offline.

- Every error is a problem document: each operation lists the errors it can answer with
  `errors(...)` in its decorator, each under `application/problem+json` with the Problem
  schema, never under `application/json`.
- Answers that any path gives whatever the operation (405 for a method the path does not
  have; 408 and 431 from the embedded server's HTTP layer, before the app) are shared
  responses, referenced by every operation.
- The API keys are an HTTP bearer scheme on the /v1 operations and /metrics, optional there:
  a server without keys needs none (and reads `senderId`); on AWS, IAM (SigV4) instead.
- /docs is Swagger UI from the files of the swagger-ui-bundle package: no other host. That
  Swagger UI (4.15) renders OpenAPI 3.0 only, so /docs reads the same document rendered
  as 3.0 (`as_openapi_30`) from /docs/openapi.json; /openapi.json stays 3.1.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from notify_relay.api.problems import PROBLEM_JSON, JSONResponse
from notify_relay.api.schemas import Problem

__all__ = ["DescribedApp", "as_openapi_30", "describe", "errors", "serve_docs"]

SCHEMAS = "#/components/schemas/"
SECURITY_SCHEME = "ApiKey"
SECURITY_DESCRIPTION = (
    "`Authorization: Bearer <api-key>`: each key configured on the server (`--api-keys`) "
    "belongs to one sender. A server without keys (local development) needs none: the "
    "sender is then the body's `senderId`, or the query parameter `senderId` on the other "
    "endpoints (default `default`). On AWS the API is behind API Gateway with IAM "
    "authorization: requests are signed with AWS SigV4, not sent with a key, and the "
    "caller's IAM principal maps to a sender.")

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer", "minimum": 1}}}
_ERRORS: Mapping[int, str] = {
    400: "`VALIDATION_ERROR`: malformed JSON, or a missing or invalid field or parameter; "
         "`errors` names each field",
    401: "`UNAUTHENTICATED`: no valid API key (only from a server with API keys)",
    403: "`FORBIDDEN`: `senderId` is not the sender of the key (or IAM principal); on a "
         "server without keys, a `Host` that is not a loopback name or the listen address, "
         "or a state-changing request from another `Origin`",
    404: "`NOT_FOUND`: no such message for the caller's sender",
    409: "`INVALID_STATE`: the message is not in a status that allows this",
    413: "`PAYLOAD_TOO_LARGE`: the request body is over 6 MiB",
    415: "`UNSUPPORTED_MEDIA_TYPE`: a request body not labelled JSON (`application/json` or "
         "`application/<name>+json`)",
    422: "`TARGET_NOT_ALLOWED`: `targetUrl` or `callbackUrl` is refused by the network policy",
    429: "`RATE_LIMITED`: the sender is over its submission rate; retry after `Retry-After`",
    500: "`SYSTEM_ERROR`: an unexpected failure; retrying (with the same `messageId`) is safe",
    503: "`SYSTEM_ERROR`: the store cannot be used now, or too many large bodies are being "
         "read at once; retry after `Retry-After`",
}
# Answers any path can give, whatever the operation: referenced by every operation.
_SHARED: Mapping[int, tuple[str, dict[str, Any]]] = {
    405: ("MethodNotAllowed", {
        "description": "`METHOD_NOT_ALLOWED`: the path exists but not with this method; "
                       "`Allow` lists the methods it answers",
        "headers": {"Allow": {"description": "the path's methods, e.g. `GET, POST`",
                              "schema": {"type": "string"}}}}),
    408: ("RequestTimeout", {
        "description": "`REQUEST_TIMEOUT` (embedded server): the request did not arrive in "
                       "time; the connection closes"}),
    431: ("HeadersTooLarge", {
        "description": "`HEADERS_TOO_LARGE` (embedded server): request header fields over "
                       "64 KiB in all, or over 100 of them; the connection closes"}),
}


_FASTAPI_422 = {"schema": {"$ref": f"{SCHEMAS}HTTPValidationError"}}


def _problem_content() -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": f"{SCHEMAS}Problem"}}}


def errors(*statuses: int, described: Mapping[int, str] | None = None
           ) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status as a problem document, with its default
    description or the one in `described`."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": (described or {}).get(status) or _ERRORS[status],
            "content": _problem_content(),
        }
        if status in (429, 503):
            response["headers"] = dict(_RETRY_AFTER)
        responses[status] = response
    return responses


def _needs_key(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


def describe(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's, changed in place) with the Problem schemas, the shared
    responses, and the API key scheme."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _, problem_schemas = models_json_schema([(Problem, "serialization")],
                                            ref_template=SCHEMAS + "{model}")
    for name, schema in problem_schemas.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    shared = components.setdefault("responses", {})
    for name, response in _SHARED.values():
        shared[name] = {**response, "content": _problem_content()}
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "API key",
        "description": SECURITY_DESCRIPTION}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if responses.get("422", {}).get("content", {}).get("application/json") == _FASTAPI_422:
                del responses["422"]  # FastAPI's own; a request validation error is a 400 here
            for status, (name, _) in _SHARED.items():
                responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
            operation["responses"] = dict(sorted(responses.items()))
            if _needs_key(path):
                # `{}`: a server without keys takes requests without one
                operation["security"] = [{SECURITY_SCHEME: []}, {}]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


class DescribedApp(FastAPI):
    """FastAPI whose /openapi.json is `describe`d."""

    _raw_document: dict[str, Any] | None = None
    _described: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        raw = super().openapi()  # cached by FastAPI until the routes change
        if raw is not self._raw_document or self._described is None:
            self._raw_document = raw
            self._described = describe(copy.deepcopy(raw))
        return self._described


# OpenAPI 3.1 -> 3.0 for Swagger UI 4, which renders nothing of a 3.1 document.
_NOT_IN_30 = ("propertyNames", "prefixItems", "contains", "dependentRequired",
              "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "if", "then",
              "else", "contentMediaType", "contentEncoding", "$schema", "$id", "$comment")

def _nullable(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` as 3.0's `X, nullable: true`."""
    others = [s for s in schema[key] if s != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != key}
    if len(others) == 1:
        only = others[0]
        base = {"allOf": [only]} if "$ref" in only or not only else dict(only)
        return {**base, **rest, "nullable": True}
    return {key: others, **rest, "nullable": True}


def _schema_30(node: Any) -> Any:
    """`node` with each JSON Schema 2020-12 idiom in it as OpenAPI 3.0 says it."""
    if isinstance(node, list):
        return [_schema_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: ({name: _schema_30(value) for name, value in value.items()}
                    if key in ("properties", "patternProperties") and isinstance(value, dict)
                    else _schema_30(value))
              for key, value in node.items()}
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and {"type": "null"} in schema[key]:
            schema = _nullable(schema, key)
    kinds = schema.get("type")
    if isinstance(kinds, list):
        named = [k for k in kinds if k != "null"]
        schema["type"] = named[0] if len(named) == 1 else named
        if "null" in kinds:
            schema["nullable"] = True
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            schema[plain] = value
            schema[bound] = True
    if "const" in schema and not isinstance(schema["const"], dict):
        schema["enum"] = [schema.pop("const")]
    for keyword in _NOT_IN_30:
        schema.pop(keyword, None)
    if isinstance(schema.get("examples"), list) and "example" not in schema:
        examples = schema.pop("examples")
        if examples:
            schema["example"] = examples[0]
    return schema


def as_openapi_30(document: Mapping[str, Any]) -> dict[str, Any]:
    """`document` (3.1) as OpenAPI 3.0.3, for Swagger UI 4; a copy."""
    converted: dict[str, Any] = _schema_30(copy.deepcopy(dict(document)))
    converted["openapi"] = "3.0.3"
    converted.pop("webhooks", None)
    converted.pop("jsonSchemaDialect", None)
    converted.get("info", {}).pop("summary", None)
    converted.get("components", {}).pop("pathItems", None)
    return converted


_ASSETS = "/docs/static"


class _SwaggerAssets(StaticFiles):
    """The files /docs uses, and their source maps; not the package's index.html, whose
    initializer loads a demo document from another host."""

    FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui-bundle.js.map", "swagger-ui.css",
                       "swagger-ui.css.map", "favicon-32x32.png", "favicon-16x16.png"})

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self.FILES:
            raise HTTPException(404)
        return await super().get_response(path, scope)


def serve_docs(app: DescribedApp) -> None:
    """/docs, its assets at /docs/static/, and the 3.0 rendering it reads; none of them
    in the document."""

    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}/docs/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def document_30(_: Request) -> Response:
        return JSONResponse(as_openapi_30(app.openapi()))

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.add_route("/docs/openapi.json", document_30, methods=["GET"], include_in_schema=False)
    app.mount(_ASSETS, _SwaggerAssets(directory=str(swagger_ui_path)), name="docs-assets")
