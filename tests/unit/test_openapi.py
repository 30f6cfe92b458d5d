"""The OpenAPI document, in-process: valid, and saying what the contract says."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.api.app import create_app
from notify_relay.api.openapi import as_openapi_30
from notify_relay.api.submission import Submission
from notify_relay.bootstrap import NoDelivery
from notify_relay.gate import Gate
from notify_relay.runtime import Runtime
from notify_relay.service import Relay

CONTRACT_PATHS = {
    "/v1/messages": {"get", "post"},
    "/v1/messages/{messageId}": {"get"},
    "/v1/messages/{messageId}/retry": {"post"},
    "/v1/messages/{messageId}/cancel": {"post"},
    "/v1/messages/replay": {"post"},
    "/v1/messages/batch": {"post"},
    "/v1/destinations": {"get"},
    "/v1/destinations/{destination}": {"get", "patch"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    store = MemoryStore()
    rt = Runtime(Relay(store, MemoryQueue(), NoDelivery(), Gate(store.destinations)))
    return create_app(rt).openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items()
            for method, op in ops.items()]


def test_the_document_is_valid_openapi_31(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


def test_what_swagger_ui_reads_is_valid_openapi_30(spec: dict[str, Any]) -> None:
    converted = as_openapi_30(spec)
    assert converted["openapi"] == "3.0.3"
    validate(converted)
    assert '"type": "null"' not in str(converted).replace("'", '"')
    assert spec["openapi"].startswith("3.1.")  # the original is untouched


def test_the_paths_are_the_contracts(spec: dict[str, Any]) -> None:
    assert {path: set(ops) for path, ops in spec["paths"].items()} == CONTRACT_PATHS
    for path, _, op in operations(spec):
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert names == set(path.replace("}", "{").split("{")[1::2])


def test_every_error_is_a_problem_document_and_nothing_else(spec: dict[str, Any]) -> None:
    shared = spec["components"]["responses"]
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            if "$ref" in response:
                response = shared[response["$ref"].rsplit("/", 1)[-1]]
            assert response["content"] == PROBLEM, (path, method, status)
            assert response["description"], (path, method, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["Problem"]["required"]) >= {
        "type", "title", "status", "detail", "code", "correlationId"}


def test_errors_are_those_each_operation_can_answer(spec: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[int]:
        return {int(s) for s in spec["paths"][path][method]["responses"] if int(s) >= 400}

    everywhere = {405, 408, 431}
    assert statuses("/v1/messages", "post") == everywhere | {
        400, 401, 403, 409, 413, 415, 422, 429, 500, 503}
    assert statuses("/v1/messages", "get") == everywhere | {400, 401, 403, 500, 503}
    assert statuses("/v1/messages/{messageId}", "get") == everywhere | {
        400, 401, 403, 404, 500, 503}
    for action in ("retry", "cancel"):
        assert statuses(f"/v1/messages/{{messageId}}/{action}", "post") == everywhere | {
            400, 401, 403, 404, 409, 413, 415, 500, 503}
    assert statuses("/healthz", "get") == everywhere | {403}
    assert statuses("/readyz", "get") == everywhere | {403, 503}
    for path, method, _ in operations(spec):
        if method == "get":
            assert not {409, 413, 415, 422, 429} & statuses(path, method), path
    rate_limited = spec["paths"]["/v1/messages"]["post"]["responses"]["429"]
    assert "Retry-After" in rate_limited["headers"]
    assert "Allow" in spec["components"]["responses"]["MethodNotAllowed"]["headers"]


def test_the_v1_operations_take_a_bearer_key_which_a_keyless_server_does_not_need(
    spec: dict[str, Any],
) -> None:
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "SigV4" in scheme["description"]
    assert "senderId" in scheme["description"]
    for path, method, op in operations(spec):
        if path.startswith("/v1/") or path == "/metrics":
            assert op["security"] == [{"ApiKey": []}, {}], (path, method)
        else:
            assert "security" not in op, path
    assert "security" not in spec  # /openapi.json itself is open


@pytest.mark.parametrize(("url", "admitted"), [
    ("http://partner.example/hook", True), ("https://partner.example:1/a", True),
    ("http://p.example:9999/", True), ("http://p.example:10000/", True),
    ("http://p.example:18080/hook", True), ("http://p.example:65535/x", True),
    ("https://p.example/a%20b?x=1&y=2#top", True), ("https://p.example/a/b;c=d/@e:f/~g_(h)", True),
    ("http://p.example:65536/x", False), ("http://p.example:0/x", False),
    ("ftp://p.example/x", False), ("http://user:pw@p.example/x", False),
    # IPv4 literals in the canonical dotted quad, as the server takes them
    ("http://192.0.2.1/hook", True), ("https://203.0.113.255:8443/x?y=1", True),
    ("http://0.0.0.0/", True), ("http://256.1.1.1/", False), ("http://192.0.2.01/", False),
    ("http://192.0.2/", False), ("http://192.0.2.1.5/", False), ("http://0x7f.0.0.1/", False),
    # not URIs (`format: uri`), which the server takes all the same
    ("http://p.example/a%2", False), ("http://p.example/a|b", False),
])
def test_the_target_url_pattern_admits_what_the_server_accepts(
    spec: dict[str, Any], url: str, admitted: bool
) -> None:
    """A client that checks targets against the document must not refuse what the server
    takes (the pattern once stopped at port 9999, and left IPv4 literals out), and what
    it admits the server takes. IPv6 literals and `_` in names are the validator's alone,
    as the pattern's comment says."""
    schema = spec["components"]["schemas"]["Submission"]["properties"]["targetUrl"]
    assert (re.fullmatch(schema["pattern"], url) is not None) == admitted
    try:
        Submission.model_validate({"messageId": "m", "targetUrl": url})
    except ValidationError:
        assert not admitted, url
