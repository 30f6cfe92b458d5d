"""The CLI's HTTP client against httpx.MockTransport handlers: requests and error mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from notify_relay.cli.http_client import ApiError, RelayClient, pages, path_segment
from notify_relay.cli.remote import REFUSED, UNAVAILABLE, report

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kwargs: Any) -> RelayClient:
    return RelayClient("http://relay.test", transport=httpx.MockTransport(handler), **kwargs)


def problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "application/problem+json",
                                           "x-correlation-id": "cid-header"},
                          json={"type": "about:blank", "title": "x", "status": status,
                                "detail": detail, "code": code, "correlationId": "cid-1"})


def test_the_key_goes_as_a_bearer_token_and_the_sender_as_the_query_parameter() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "nextCursor": None})

    with client(handler, api_key="k-1", sender="team-a") as relay:
        relay.list_messages(status="FAILED", limit=10)
    assert seen[0].headers["authorization"] == "Bearer k-1"
    assert dict(seen[0].url.params) == {"status": "FAILED", "limit": "10", "senderId": "team-a"}


def test_a_submission_carries_the_sender_in_its_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"messageId": "m-1", "status": "QUEUED",
                                         "duplicate": False})

    with client(handler, sender="team-a") as relay:
        assert relay.submit({"messageId": "m-1", "targetUrl": "http://x"})["status"] == "QUEUED"
    assert not seen[0].url.params
    assert json.loads(seen[0].content) == {"messageId": "m-1", "targetUrl": "http://x",
                                           "senderId": "team-a"}


def test_ids_and_names_are_one_path_segment_each() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        # the fields each call checks for, all in one answer
        return httpx.Response(200, json={"messageId": "m", "status": "QUEUED", "attempts": [],
                                         "destination": "d", "state": "CLOSED",
                                         "replayed": 0, "more": False})

    with client(handler) as relay:
        relay.get_message("a:b@c")
        relay.get_message("..")
        relay.get_destination("[2001:db8::1]:8443")
        relay.patch_destination("api.partner.com:443", {"paused": True})
        relay.cancel("m-1")
        relay.replay(destination="d", limit=5)
    assert paths == ["/v1/messages/a%3Ab%40c", "/v1/messages/%2E%2E",
                     "/v1/destinations/%5B2001%3Adb8%3A%3A1%5D%3A8443",
                     "/v1/destinations/api.partner.com%3A443", "/v1/messages/m-1/cancel",
                     "/v1/messages/replay"]
    assert path_segment("m.1") == "m.1"


def test_problem_details_become_an_api_error() -> None:
    with client(lambda r: problem(404, "NOT_FOUND", "no message m-1")) as relay, \
            pytest.raises(ApiError) as caught:
        relay.get_message("m-1")
    error = caught.value
    assert (error.status, error.code, error.detail, error.correlation_id) == (
        404, "NOT_FOUND", "no message m-1", "cid-1")
    assert error.refused


def test_an_answer_that_is_not_problem_details_is_still_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<b>Bad gateway</b></html>",
                              headers={"x-correlation-id": "cid-proxy"})

    with client(handler) as relay, pytest.raises(ApiError) as caught:
        relay.list_destinations()
    error = caught.value
    assert (error.status, error.code, error.correlation_id) == (502, "HTTP_502", "cid-proxy")
    assert error.detail == "Bad Gateway: <html> <b>Bad gateway</b></html>"
    assert not error.refused


@pytest.mark.parametrize(("raised", "code"), [
    (httpx.ConnectError("connection refused"), "UNREACHABLE"),
    (httpx.ReadTimeout("timed out"), "TIMEOUT"),
    (httpx.RemoteProtocolError("server disconnected"), "UNREACHABLE"),
])
def test_no_answer_is_an_error_without_a_status(raised: Exception, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with client(handler, timeout=2) as relay, pytest.raises(ApiError) as caught:
        relay.get_message("m-1")
    assert caught.value.status is None
    assert caught.value.code == code
    assert "http://relay.test" in caught.value.detail


@pytest.mark.parametrize(("error", "status"), [
    (ApiError(400, "VALIDATION_ERROR", "x"), REFUSED),
    (ApiError(401, "UNAUTHENTICATED", "x"), REFUSED),
    (ApiError(404, "NOT_FOUND", "x"), REFUSED),
    (ApiError(409, "INVALID_STATE", "x"), REFUSED),
    (ApiError(429, "RATE_LIMITED", "x"), REFUSED),
    (ApiError(500, "SYSTEM_ERROR", "x"), UNAVAILABLE),
    (ApiError(503, "SYSTEM_ERROR", "x"), UNAVAILABLE),
    (ApiError(None, "TIMEOUT", "x"), UNAVAILABLE),
])
def test_exit_statuses(error: ApiError, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert report(error) == status
    assert capsys.readouterr().err.startswith(f"notify-relay: error: {error.code}: x")


def test_pages_follow_the_cursor_up_to_the_limit() -> None:
    calls: list[dict[str, Any]] = []
    data = list(range(7))

    def fetch(*, limit: int, cursor: str | None, **filters: Any) -> dict[str, Any]:
        calls.append({"limit": limit, "cursor": cursor, **filters})
        start = int(cursor or 0)
        end = min(start + min(limit, 3), len(data))
        return {"items": data[start:end], "nextCursor": str(end) if end < len(data) else None}

    assert [i for p in pages(fetch, limit=None, status="FAILED") for i in p["items"]] == data
    assert calls[0] == {"limit": 500, "cursor": None, "status": "FAILED"}
    calls.clear()
    assert [i for p in pages(fetch, limit=4) for i in p["items"]] == [0, 1, 2, 3]
    assert [c["limit"] for c in calls] == [4, 1]


@pytest.mark.parametrize("answer", [{}, {"ok": True}, [], "hello"])
def test_an_answer_that_is_not_notify_relays_is_an_error(answer: object) -> None:
    """A mistyped --url (a partner's port, say) must not print a made-up success."""
    with client(lambda request: httpx.Response(200, json=answer)) as relay:
        for call in (lambda: relay.submit({"messageId": "m", "targetUrl": "http://x"}),
                     lambda: relay.get_message("m"), lambda: relay.list_messages(),
                     lambda: relay.list_destinations()):
            with pytest.raises(ApiError) as raised:
                call()
            assert raised.value.code == "BAD_RESPONSE"
            assert not raised.value.refused  # exit 3: no notify-relay answered
            assert "is http://relay.test a notify-relay server?" in raised.value.detail


def test_nan_or_infinity_is_not_an_answer() -> None:
    raw = b'{"messageId": "m", "status": NaN, "attempts": []}'
    with client(lambda request: httpx.Response(200, content=raw)) as relay, \
            pytest.raises(ApiError) as raised:
        relay.get_message("m")
    assert raised.value.code == "BAD_RESPONSE"


def test_an_answer_of_the_right_outline_but_wrong_insides_is_exit_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from notify_relay.cli.remote import call

    def lists(client: RelayClient, args: dict[str, object]) -> int:
        items: object = {"items": 5, "nextCursor": None}["items"]  # as a hostile server
        return len(items)  # type: ignore[arg-type]

    assert call(lists, {"url": "http://127.0.0.1:9", "json": False}) == 3
    assert "not notify-relay's API (TypeError" in capsys.readouterr().err


def test_the_cli_that_serves_does_not_load_httpx() -> None:
    """`notify-relay serve` is this CLI: httpx (with rich and pygments) would be 4 MiB of
    the serving process's memory (issue 9's bound), used only by the remote commands."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, notify_relay.cli, notify_relay.embedded.supervisor;"
         "print(sorted(m for m in ('httpx', 'rich', 'pygments') if m in sys.modules))"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert loaded == "[]"
