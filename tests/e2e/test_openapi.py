"""/openapi.json holds to the real server: every error an operation answers is described
for it, as a problem document; /docs works with no other host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from notify_relay.api.middleware import MAX_BODY_BYTES
from tests.e2e.api_client import ServerProcess

pytestmark = pytest.mark.e2e

KEYS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}
BURST = 5
TOO_LARGE = b"x" * (MAX_BODY_BYTES + 1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("openapi") / "relay.db"
    keys = ",".join(f"{key}={sender}" for sender, key in KEYS.items())
    with ServerProcess(db, "--api-keys", keys, "--metrics-need-key", "--rate-limit", "0.001",
                       "--rate-burst", str(BURST), "--log-level", "WARNING") as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def spec(http: httpx.Client) -> dict[str, Any]:
    document: dict[str, Any] = http.get("/openapi.json").json()
    return document


def key(sender: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[sender]}"}


def message(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"messageId": message_id, "targetUrl": "https://partner.example/hook", **fields}


def described(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The response `status` of the operation, `$ref` followed; fails when it is not there."""
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not list {status}"
    response: dict[str, Any] = responses[str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response


def assert_described(spec: dict[str, Any], path: str, method: str,
                     answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (path, method, answer.status_code, answer.text[:300])
    assert answer.headers["content-type"].startswith("application/problem+json")
    response = described(spec, path, method, status)
    assert response["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_every_error_the_server_answers_is_described_for_its_operation(
    http: httpx.Client, spec: dict[str, Any]
) -> None:
    alice, bob, carol = key("alice"), key("bob"), key("carol")
    json_body = {"Content-Type": "application/json"}
    text_body = {"Content-Type": "text/plain"}
    # paused: the messages stay QUEUED
    assert http.patch("/v1/destinations/partner.example:443", json={"paused": True},
                      headers=alice).status_code == 200
    for mid in ("oa-retry", "oa-cancel"):
        assert http.post("/v1/messages", json=message(mid), headers=alice).status_code == 202
    assert http.post("/v1/messages/oa-cancel/cancel", headers=alice).status_code == 200

    messages, one = "/v1/messages", "/v1/messages/{messageId}"
    retry, cancel = "/v1/messages/{messageId}/retry", "/v1/messages/{messageId}/cancel"
    replay, dests = "/v1/messages/replay", "/v1/destinations"
    batch = "/v1/messages/batch"
    dest = "/v1/destinations/{destination}"
    # (operation path, method, status, url, request options)
    cases: list[tuple[str, str, int, str, dict[str, Any]]] = [
        (messages, "POST", 400, messages, {"content": b'{"messageId":', "headers": {
            **alice, **json_body}}),
        (messages, "POST", 401, messages, {"json": message("oa-1")}),
        (messages, "POST", 403, messages, {"json": message("oa-2", senderId="bob"),
                                           "headers": alice}),
        (messages, "POST", 409, messages, {"json": message(
            "oa-retry", targetUrl="https://partner.example/other"), "headers": alice}),
        (messages, "POST", 413, messages, {"content": TOO_LARGE, "headers": {
            **alice, **json_body}}),
        (messages, "POST", 415, messages, {"content": b"{}", "headers": {**alice, **text_body}}),
        (messages, "POST", 422, messages, {"json": message(
            "oa-3", targetUrl="http://127.0.0.1:9/hook"), "headers": bob}),
        (messages, "GET", 400, messages, {"params": {"limit": 0}, "headers": alice}),
        (messages, "GET", 401, messages, {}),
        (messages, "GET", 403, messages, {"params": {"senderId": "bob"}, "headers": alice}),
        (one, "GET", 400, "/v1/messages/oa-retry", {"params": {"senderId": "no way"},
                                                    "headers": alice}),
        (one, "GET", 401, "/v1/messages/oa-retry", {}),
        (one, "GET", 403, "/v1/messages/oa-retry", {"params": {"senderId": "bob"},
                                                    "headers": alice}),
        (one, "GET", 404, "/v1/messages/oa-unknown", {"headers": alice}),
        (replay, "POST", 400, replay, {"json": {"limit": 0}, "headers": alice}),
        (replay, "POST", 401, replay, {"json": {}}),
        (replay, "POST", 403, replay, {"json": {}, "params": {"senderId": "bob"},
                                       "headers": alice}),
        (replay, "POST", 413, replay, {"content": TOO_LARGE, "headers": {**alice, **json_body}}),
        (replay, "POST", 415, replay, {"content": b"{}", "headers": {**alice, **text_body}}),
        (batch, "POST", 400, batch, {"json": {"messages": []}, "headers": alice}),
        (batch, "POST", 401, batch, {"json": {"messages": [message("oa-b")]}}),
        (batch, "POST", 413, batch, {"content": TOO_LARGE, "headers": {**alice, **json_body}}),
        (batch, "POST", 415, batch, {"content": b"{}", "headers": {**alice, **text_body}}),
        (dests, "GET", 400, dests, {"params": {"state": "SHUT"}, "headers": alice}),
        (dests, "GET", 401, dests, {}),
        (dests, "GET", 403, dests, {"params": {"senderId": "bob"}, "headers": alice}),
        (dest, "GET", 400, "/v1/destinations/no!name", {"headers": alice}),
        (dest, "GET", 401, "/v1/destinations/x", {}),
        (dest, "GET", 403, "/v1/destinations/x", {"params": {"senderId": "bob"},
                                                  "headers": alice}),
        (dest, "GET", 404, "/v1/destinations/nothing.example:443", {"headers": alice}),
        (dest, "PATCH", 400, "/v1/destinations/x", {"json": {"paused": "yes"},
                                                    "headers": alice}),
        (dest, "PATCH", 401, "/v1/destinations/x", {"json": {}}),
        (dest, "PATCH", 403, "/v1/destinations/x", {"json": {}, "params": {"senderId": "bob"},
                                                    "headers": alice}),
        (dest, "PATCH", 404, "/v1/destinations/a%2Fb", {"json": {}, "headers": alice}),
        (dest, "PATCH", 413, "/v1/destinations/x", {"content": TOO_LARGE, "headers": {
            **alice, **json_body}}),
        (dest, "PATCH", 415, "/v1/destinations/x", {"content": b"{}", "headers": {
            **alice, **text_body}}),
        ("/metrics", "GET", 401, "/metrics", {}),
        ("/healthz", "GET", 431, "/healthz", {"headers": {f"x-h{i}": "1" for i in range(101)}}),
    ]
    for path, name in ((retry, "retry"), (cancel, "cancel")):
        url = f"/v1/messages/oa-{name}/{name}"
        cases += [
            (path, "POST", 400, url, {"params": {"senderId": "no way"}, "headers": alice}),
            (path, "POST", 401, url, {}),
            (path, "POST", 403, url, {"params": {"senderId": "bob"}, "headers": alice}),
            (path, "POST", 404, f"/v1/messages/oa-unknown/{name}", {"headers": alice}),
            # retry of a QUEUED message; cancel of a CANCELLED one
            (path, "POST", 409, url, {"headers": alice}),
            (path, "POST", 413, url, {"content": TOO_LARGE, "headers": {**alice, **json_body}}),
            (path, "POST", 415, url, {"content": b"{}", "headers": {**alice, **text_body}}),
        ]
    failures = []
    for path, method, status, url, options in cases:
        answer = http.request(method, url, **options)
        try:
            assert_described(spec, path, method, answer, status)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)

    # 429: over the burst
    answers = [http.post("/v1/messages", json=message(f"oa-rate-{i}"), headers=carol)
               for i in range(BURST + 1)]
    assert [a.status_code for a in answers] == [202] * BURST + [429]
    assert_described(spec, messages, "POST", answers[-1], 429)
    assert "Retry-After" in described(spec, messages, "POST", 429)["headers"]


@pytest.mark.parametrize(("path", "url", "wrong"), [
    ("/v1/messages", "/v1/messages", "PUT"),
    ("/v1/messages/{messageId}", "/v1/messages/m", "DELETE"),
    ("/v1/messages/{messageId}/retry", "/v1/messages/m/retry", "GET"),
    ("/v1/messages/{messageId}/cancel", "/v1/messages/m/cancel", "PUT"),
    ("/v1/messages/replay", "/v1/messages/replay", "PATCH"),
    ("/v1/destinations", "/v1/destinations", "POST"),
    ("/v1/destinations/{destination}", "/v1/destinations/d", "DELETE"),
    ("/healthz", "/healthz", "POST"),
    ("/readyz", "/readyz", "DELETE"),
    ("/metrics", "/metrics", "PUT"),
])
def test_a_wrong_method_is_a_405_every_operation_of_the_path_lists(
    http: httpx.Client, spec: dict[str, Any], path: str, url: str, wrong: str
) -> None:
    answer = http.request(wrong, url, headers={**key("alice"), "Content-Type": "application/json"},
                          content=b"{}")
    assert answer.headers["allow"]
    for method in spec["paths"][path]:
        assert_described(spec, path, method, answer, 405)


def test_a_get_lists_no_error_only_a_body_or_a_submission_can_get(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        if "get" in operations:
            listed = set(operations["get"]["responses"])
            assert not {"409", "413", "415", "422", "429"} & listed, path
    assert "429" not in spec["paths"]["/v1/messages/{messageId}/retry"]["post"]["responses"]
    assert "422" not in spec["paths"]["/v1/messages/replay"]["post"]["responses"]


def test_a_keyless_server_refuses_a_foreign_host_as_described(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    db = tmp_path_factory.mktemp("openapi-keyless") / "relay.db"
    with ServerProcess(db, "--log-level", "WARNING") as keyless, httpx.Client(
            base_url=keyless.base_url, timeout=30.0) as http:
        spec = http.get("/openapi.json").json()
        for path, url in (("/healthz", "/healthz"), ("/readyz", "/readyz"),
                          ("/metrics", "/metrics"), ("/v1/messages", "/v1/messages"),
                          ("/v1/destinations", "/v1/destinations")):
            answer = http.get(url, headers={"Host": "relay.attacker.example"})
            assert_described(spec, path, "GET", answer, 403)
        answer = http.post("/v1/messages", json=message("oa-origin"),
                           headers={"Origin": "http://attacker.example"})
        assert_described(spec, "/v1/messages", "POST", answer, 403)
        answer = http.post("/v1/messages/batch", json={"messages": [message("oa-origin")]},
                           headers={"Origin": "http://attacker.example"})
        assert_described(spec, "/v1/messages/batch", "POST", answer, 403)


def test_docs_load_from_this_server_alone(http: httpx.Client, server: ServerProcess) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not [url for url in re.findall(r"https?://[^\s\"'<>]+", html)
                if not url.startswith(server.base_url)]
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert len(assets) >= 3  # script, stylesheet, favicon
    document = re.search(r"""url:\s*['"]([^'"]+)['"]""", html)
    assert document is not None
    for url in [*assets, document[1]]:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert http.get(url).status_code == 200, url
    assert http.get(document[1]).json()["openapi"].startswith("3.0.")  # what Swagger UI 4 reads
    # the package's own demo page, which loads a document from another host, is not served
    assert http.get("/docs/static/index.html").status_code == 404
