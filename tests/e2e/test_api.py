"""The contract over real sockets: the server process, a real partner, httpx as the sender."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import httpx
import pytest

from notify_relay.api.schemas import MessageOut, MessagePage, Problem, SubmitResponse
from tests.e2e.api_client import Api, ServerProcess
from tests.partner import Partner

FAST = {"initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}
MIB = 1024 * 1024


def new_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    Problem.model_validate(body)
    assert body["code"] == code
    assert body["status"] == status
    assert body["correlationId"] == response.headers["x-correlation-id"]
    return body


def test_submit_deliver_and_read_back(api: Api, partner: Partner) -> None:
    mid = new_id()
    response = api.submit({"messageId": mid, "targetUrl": partner.url("/ok"),
                           "body": {"hello": "world"}, "headers": {"Authorization": "Bearer s3"},
                           "timestamp": "2026-11-28T23:59:59.123Z"},
                          headers={"X-Correlation-Id": "trace-123"})
    assert response.status_code == 202
    assert response.headers["x-correlation-id"] == "trace-123"
    accepted = SubmitResponse.model_validate(response.json()).model_dump()
    assert accepted == {"messageId": mid, "senderId": "default", "status": "QUEUED",
                        "stored": True, "queued": True, "duplicate": False,
                        "correlationId": "trace-123"}
    message = api.wait_for(mid, {"DELIVERED"})
    MessageOut.model_validate(message)
    assert message["attemptCount"] == 1
    assert message["attempts"][0]["outcome"] == "SUCCESS"
    assert message["headers"] == {"Authorization": "[REDACTED]"}
    assert message["timestamp"] == "2026-11-28T23:59:59.123Z"
    assert message["createdAt"].endswith("Z")
    (got,) = partner.received("/ok")
    assert json.loads(got.body) == {"hello": "world"}
    assert got.header("Authorization") == "Bearer s3"
    assert got.header("X-Correlation-Id") == "trace-123"


def test_a_correlation_id_with_spaces_is_the_callers(api: Api, partner: Partner) -> None:
    """Any header value in ASCII up to 200 characters is echoed and carried (one with a
    space was replaced by a new id); beyond, or with control characters, a new UUID."""
    mid = new_id()
    response = api.submit({"messageId": mid, "targetUrl": partner.url("/cid")},
                          headers={"X-Correlation-Id": "order 42\tcheckout"})
    assert response.headers["x-correlation-id"] == "order 42\tcheckout"
    assert response.json()["correlationId"] == "order 42\tcheckout"
    api.wait_for(mid, {"DELIVERED"})
    (got,) = partner.received("/cid")
    assert got.header("X-Correlation-Id") == "order 42\tcheckout"
    too_long = api.http.get("/healthz", headers={"X-Correlation-Id": "x" * 201})
    assert str(uuid.UUID(too_long.headers["x-correlation-id"])) == too_long.headers[
        "x-correlation-id"]


def test_duplicate_returns_200_and_sends_once(api: Api, partner: Partner) -> None:
    message = {"messageId": new_id(), "targetUrl": partner.url("/ok"), "body": "x"}
    assert api.submit(message).status_code == 202
    api.wait_for(message["messageId"], {"DELIVERED"})
    again = api.submit(message)
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["status"] == "DELIVERED"
    assert len(partner.received("/ok")) == 1


def test_conflict_on_different_content(api: Api, partner: Partner) -> None:
    mid = new_id()
    assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok"), "body": "a"}
                      ).status_code == 202
    conflict = api.submit({"messageId": mid, "targetUrl": partner.url("/ok"), "body": "b"})
    problem(conflict, 409, "IDEMPOTENCY_CONFLICT")


def test_dead_letter_then_manual_retry(api: Api, partner: Partner) -> None:
    mid = new_id()
    api.submit({"messageId": mid, "targetUrl": partner.url(f"/flaky/2?{mid}"),
                "retryPolicy": {**FAST, "maxAttempts": 2}})
    failed = api.wait_for(mid, {"FAILED"})
    assert [a["outcome"] for a in failed["attempts"]] == ["RETRY", "GIVE_UP"]
    assert (failed["attemptCount"], failed["maxAttempts"]) == (2, 2)
    assert failed["lastError"] == "HTTP 503"
    assert api.list(status="FAILED").json()["items"][0]["messageId"] == mid

    retried = api.retry(mid)
    assert retried.status_code == 202
    assert retried.json()["status"] == "QUEUED"
    delivered = api.wait_for(mid, {"DELIVERED"})
    assert (delivered["attemptCount"], delivered["maxAttempts"]) == (3, 4)
    assert [a["number"] for a in delivered["attempts"]] == [1, 2, 3]
    problem(api.retry(mid), 409, "INVALID_STATE")


def test_retry_unknown_message_is_404(api: Api) -> None:
    problem(api.retry("does-not-exist"), 404, "NOT_FOUND")


def test_get_unknown_message_is_404(api: Api) -> None:
    problem(api.get("does-not-exist"), 404, "NOT_FOUND")


def test_list_with_cursor_paging_newest_first(api: Api, partner: Partner) -> None:
    sender = new_id("pager")
    ids = [new_id() for _ in range(5)]
    for mid in ids:
        assert api.submit({"messageId": mid, "senderId": sender,
                           "targetUrl": partner.url("/ok")}).status_code == 202
    seen: list[str] = []
    for page in api.pages(api.list, senderId=sender, limit=2):
        body = MessagePage.model_validate(page)
        seen += [item.messageId for item in body.items]
    assert seen == list(reversed(ids))
    problem(api.list(senderId=sender, limit=0), 400, "VALIDATION_ERROR")
    problem(api.list(senderId=sender, limit=501), 400, "VALIDATION_ERROR")
    problem(api.list(senderId=sender, status="LOST"), 400, "VALIDATION_ERROR")
    problem(api.list(senderId=sender, cursor="garbage!"), 400, "VALIDATION_ERROR")


def test_sender_scoping_without_keys(api: Api, partner: Partner) -> None:
    mid = new_id()
    api.submit({"messageId": mid, "senderId": "team-a", "targetUrl": partner.url("/ok")})
    assert api.get(mid, senderId="team-a").status_code == 200
    problem(api.get(mid), 404, "NOT_FOUND")
    problem(api.get(mid, senderId="team-b"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"targetUrl": "https://p.example/x"}, "messageId"),
        ({"messageId": "bad id", "targetUrl": "https://p.example/x"}, "messageId"),
        ({"messageId": "m", "targetUrl": "ftp://p.example/x"}, "targetUrl"),
        # was accepted, then failed at every attempt: "Invalid IPv6 URL"
        ({"messageId": "m", "targetUrl": "https://[2001:db8::1]junk/x"}, "targetUrl"),
        ({"messageId": "m", "targetUrl": "https://p.example/x",
          "callbackUrl": "http://x[2001:db8::1]/cb"}, "callbackUrl"),
        ({"messageId": "m", "targetUrl": "https://p.example/x",
          "retryPolicy": {"maxAttempts": 101}}, "retryPolicy.maxAttempts"),
        ({"messageId": "m", "targetUrl": "https://p.example/x",
          "headers": {"X-Foo": "a\nb"}}, "headers.X-Foo"),
        ({"messageId": "m", "targetUrl": "https://p.example/x",
          "headers": {"Host": "evil"}}, "headers.Host"),
        ({"messageId": "m", "targetUrl": "https://p.example/x", "method": "TRACE"}, "method"),
    ],
)
def test_validation_errors_name_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    response = problem(api.submit(body), 400, "VALIDATION_ERROR")
    assert [e["field"] for e in response["errors"]] == [field]
    assert response["detail"].startswith(f"{field}: ")


@pytest.mark.parametrize("field", ["targetUrl", "callbackUrl"])
def test_a_url_of_2048_characters_is_taken_and_one_more_is_400(api: Api, partner: Partner,
                                                               field: str) -> None:
    """The contract's bound over HTTP; the schemathesis runs lower it (see their hooks)."""
    path = f"/wide-{field}/"

    def submission(length: int) -> dict[str, Any]:
        url = partner.url(path)
        return {"messageId": new_id(), "targetUrl": partner.url("/ok"),
                field: url + "a" * (length - len(url))}

    taken = submission(2048)
    assert len(taken[field]) == 2048
    assert api.submit(taken).status_code == 202
    response = problem(api.submit(submission(2049)), 400, "VALIDATION_ERROR")
    assert [e["field"] for e in response["errors"]] == [field]
    api.wait_for(taken["messageId"], {"DELIVERED"})
    if field == "targetUrl":
        (got,) = partner.received(path)
        assert partner.url(got.path) == taken[field]


def test_malformed_json_is_400(api: Api) -> None:
    response = api.http.post("/v1/messages", content=b'{"messageId": ',
                             headers={"Content-Type": "application/json"})
    body = problem(response, 400, "VALIDATION_ERROR")
    assert "malformed JSON" in body["detail"]
    assert [e["field"] for e in body["errors"]] == [""]  # the whole body, not an offset


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"messageId": "\xff\xfe"}', "UTF-8"),
        (b'\xef\xbb\xbf{"messageId": "x"}', "BOM"),  # json.loads refuses it; so does loads
        (b"[" * 1000 + b"]" * 1000, "deeply"),
        (b'{"messageId": "x", "body": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"messageId": "x", "targetUrl": "https://p.example/", "body": {"v": NaN}}', "NaN"),
        (b'{"messageId": "x", "targetUrl": "https://p.example/", "body": [Infinity]}',
         "Infinity"),
        (b'{"messageId": "x", "targetUrl": "https://p.example/", "body": 1e999999}', "range"),
        (b'{"messageId": "x", "targetUrl": "https://a.example/", "targetUrl": "https://b.example/"}',
         "twice"),
    ],
)
def test_json_that_json_loads_would_bend_is_400(api: Api, raw: bytes, says: str) -> None:
    response = api.http.post("/v1/messages", content=raw,
                             headers={"Content-Type": "application/json"})
    body = problem(response, 400, "VALIDATION_ERROR")
    assert [e["field"] for e in body["errors"]] == [""]
    assert says in body["detail"]
    assert "sys." not in body["detail"]  # said in JSON's terms, not the interpreter's


def test_a_deeply_nested_body_is_delivered_as_compact_json(api: Api, partner: Partner) -> None:
    """Any JSON value the parser takes (it was refused from 255 levels, by a field path
    4 KB long); deeper than the parser goes, a 400 that names the nesting."""
    mid = new_id("deep")
    body: Any = {"leaf": [1, "two"]}
    for level in range(600):
        body = [body] if level % 2 else {"k": body}
    assert api.submit({"messageId": mid, "targetUrl": partner.url("/deep"),
                       "body": body}).status_code == 202
    api.wait_for(mid, {"DELIVERED"})
    (got,) = partner.received("/deep")
    assert got.body == json.dumps(body, separators=(",", ":")).encode()

    raw = (b'{"messageId": "x", "targetUrl": "https://p.example/", "body": '
           + b"[" * 5000 + b"]" * 5000 + b"}")
    refused = problem(api.http.post("/v1/messages", content=raw,
                                    headers={"Content-Type": "application/json"}),
                      400, "VALIDATION_ERROR")
    assert "nested too deeply" in refused["detail"]
    assert len(refused["detail"]) < 200


def test_json_that_is_not_an_object_is_400(api: Api) -> None:
    problem(api.http.post("/v1/messages", json=[1, 2]), 400, "VALIDATION_ERROR")


def test_empty_body_is_400(api: Api) -> None:
    response = api.http.post("/v1/messages", headers={"Content-Type": "application/json"})
    problem(response, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_non_json_content_type_is_415(api: Api, content_type: str) -> None:
    response = api.http.post("/v1/messages", content=b'{"messageId":"x"}',
                             headers={"Content-Type": content_type})
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_form_encoded_non_json_is_415(api: Api) -> None:
    problem(api.http.post("/v1/messages", data={"messageId": "x"}), 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain",
                                          None])
def test_json_sent_as_a_form_text_or_untyped_is_415(api: Api, partner: Partner,
                                                   content_type: str | None) -> None:
    """A page can make a browser send these cross-origin without asking (contract v1.1)."""
    payload = json.dumps({"messageId": new_id(), "targetUrl": partner.url("/ok")})
    headers = {"Content-Type": content_type} if content_type else {}
    response = api.http.post("/v1/messages", content=payload.encode(), headers=headers)
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/vnd.partner+json", "Application/JSON"])
def test_json_media_types_are_accepted(api: Api, partner: Partner, content_type: str) -> None:
    payload = json.dumps({"messageId": new_id(), "targetUrl": partner.url("/ok")})
    response = api.http.post("/v1/messages", content=payload.encode(),
                             headers={"Content-Type": content_type})
    assert response.status_code == 202, response.text


def test_keyless_server_answers_only_loopback_host_names(api: Api, server: ServerProcess) -> None:
    """A page on evil.example whose name is rebound to 127.0.0.1 sends Host: evil.example."""
    for host in ("evil.example", "evil.example:8080", "10.0.0.1", "127.0.0.1.evil.example"):
        problem(api.http.get("/v1/messages", headers={"Host": host}), 403, "FORBIDDEN")
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}",
                 "[::1]:1234", "LOCALHOST"):
        assert api.http.get("/v1/messages", headers={"Host": host}).status_code == 200


def test_keyless_server_refuses_changes_from_another_origin(api: Api, partner: Partner,
                                                            server: ServerProcess) -> None:
    body = {"messageId": new_id(), "targetUrl": partner.url("/ok")}
    for origin in ("http://evil.example", "null", f"http://localhost:{server.port + 1}",
                   f"https://127.0.0.1:{server.port}"):  # another scheme, another origin
        problem(api.submit(body, headers={"Origin": origin}), 403, "FORBIDDEN")
        problem(api.http.post(f"/v1/messages/{body['messageId']}/retry",
                              headers={"Origin": origin}), 403, "FORBIDDEN")
        problem(api.http.patch("/v1/destinations/x", json={"paused": True},
                               headers={"Origin": origin}), 403, "FORBIDDEN")
        # reading is not a change (and CORS keeps the answer from the page)
        assert api.http.get("/v1/messages", headers={"Origin": origin}).status_code == 200
    same = api.submit(body, headers={"Origin": server.base_url})
    assert same.status_code == 202


@pytest.mark.parametrize("host", ["169.254.169.254", "[::169.254.169.254]", "[::10.0.0.1]",
                                  "[::ffff:169.254.169.254]"])
def test_ip_literal_target_refused(api: Api, host: str) -> None:
    """The IPv4-compatible form (::/96) too, which Python 3.11 calls global."""
    response = api.submit({"messageId": new_id(), "targetUrl": f"http://{host}/latest"})
    problem(response, 422, "TARGET_NOT_ALLOWED")


def test_six_mib_body_delivered_byte_identical(api: Api, partner: Partner) -> None:
    envelope = {"messageId": new_id("big"), "targetUrl": partner.url("/ok"), "body": ""}
    overhead = len(json.dumps(envelope, separators=(",", ":")).encode())
    target = 6 * MIB - overhead  # bytes the body's characters take, no escapes needed
    text = "€" * 1000 + "0123456789abcdef" * ((target - 3000) // 16)
    text += "z" * (target - len(text.encode()))
    envelope["body"] = text
    raw = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(raw) == 6 * MIB
    response = api.http.post("/v1/messages", content=raw,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    api.wait_for(envelope["messageId"], {"DELIVERED"})
    (got,) = partner.received("/ok")
    assert got.body == text.encode()

    too_big = raw[:-1] + b" }"
    assert len(too_big) == 6 * MIB + 1
    problem(api.http.post("/v1/messages", content=too_big,
                          headers={"Content-Type": "application/json"}),
            413, "PAYLOAD_TOO_LARGE")


def test_oversized_chunked_body_is_413(api: Api) -> None:
    def chunks() -> Any:
        for _ in range(7):
            yield b" " * MIB

    response = api.http.post("/v1/messages", content=chunks(),
                             headers={"Content-Type": "application/json"})
    problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_unknown_route_is_problem_404(api: Api) -> None:
    problem(api.http.get("/v2/nothing"), 404, "NOT_FOUND")


def test_head_is_get_without_the_body(api: Api, partner: Partner) -> None:
    """RFC 9110: a general-purpose server supports HEAD wherever it supports GET (it was
    405 everywhere); the routes the owner process serves included (/metrics)."""
    mid = new_id("head")
    assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok")}).status_code == 202
    for path in ("/healthz", "/metrics", f"/v1/messages/{mid}", "/v1/messages",
                 "/v1/destinations", "/openapi.json"):
        got = api.http.get(path)
        head = api.http.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert "x-correlation-id" in head.headers
        if path in ("/healthz", "/openapi.json"):  # the same answer both times
            assert head.headers["content-length"] == str(len(got.content)), path
    missing = api.http.head("/v1/messages/no-such-id")
    assert (missing.status_code, missing.content) == (404, b"")
    assert missing.headers["content-type"] == "application/problem+json"
    post_only = api.http.head(f"/v1/messages/{mid}/retry")
    assert (post_only.status_code, post_only.headers.get("allow")) == (405, "POST")
    get_only = api.http.post("/healthz")
    assert get_only.headers["allow"] == "GET, HEAD"
    assert problem(get_only, 405, "METHOD_NOT_ALLOWED")["detail"] == (
        "POST is not allowed here; use GET or HEAD")
    asked = api.http.request("HEAD", f"/v1/messages/{mid}/retry",
                             headers={"X-Correlation-Id": "head-405"})
    assert asked.headers["x-correlation-id"] == "head-405"


def test_a_trailing_slash_is_an_unknown_route_not_a_redirect(api: Api) -> None:
    """Starlette answered these 307 to the path without the slash, with an empty body."""
    problem(api.http.post("/v1/messages/", json={}), 404, "NOT_FOUND")
    problem(api.http.post("/v1/messages/batch/", json={"messages": []}), 404, "NOT_FOUND")
    for path in ("/v1/messages/x/", "/v1/destinations/", "/healthz/"):
        problem(api.http.get(path), 404, "NOT_FOUND")


def test_health_ready_metrics(api: Api, partner: Partner) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    assert api.http.get("/readyz").status_code == 200
    mid = new_id()
    api.submit({"messageId": mid, "targetUrl": partner.url("/ok")})
    api.wait_for(mid, {"DELIVERED"})
    metrics = api.http.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in ("notify_relay_submissions_total", "notify_relay_attempts_total",
                 "notify_relay_deliveries_total", "notify_relay_dead_letters_total",
                 "notify_relay_queue_depth", "notify_relay_delivery_latency_seconds_bucket"):
        assert name in text
    assert 'notify_relay_attempts_total{outcome="SUCCESS"}' in text
    api.submit({"messageId": "bad id", "targetUrl": partner.url("/ok")})
    text = api.http.get("/metrics").text
    assert 'notify_relay_submissions_total{code="400",result="rejected"}' in text


def test_openapi_describes_every_endpoint(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert {("/v1/messages", "post"), ("/v1/messages", "get"),
            ("/v1/messages/{messageId}", "get"), ("/v1/messages/{messageId}/retry", "post"),
            ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")} <= paths
    submit = spec["paths"]["/v1/messages"]["post"]
    assert {"200", "202", "400", "409", "413", "415", "422"} <= set(submit["responses"])
    schema = spec["components"]["schemas"]["Submission"]
    assert set(schema["required"]) == {"messageId", "targetUrl"}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_exits_0(tmp_path: Any, partner: Partner, stop: signal.Signals) -> None:
    """Supervisors and shells read -15 or -2 as a failure (contract v1.1)."""
    server = ServerProcess(tmp_path / "stop.db", "--allow-networks", "127.0.0.1/32").start()
    api = Api(server.base_url)
    assert api.submit({"messageId": "before-stop", "targetUrl": partner.url("/ok")}
                      ).status_code == 202
    api.wait_for("before-stop", {"DELIVERED"})
    api.close()
    assert server.proc is not None
    server.proc.send_signal(stop)
    assert server.proc.wait(timeout=30) == 0
    assert "Application shutdown complete" in server.logs()


def test_server_listens_on_loopback_by_default(server: ServerProcess) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
