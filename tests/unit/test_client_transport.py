"""Client and AsyncClient over httpx.MockTransport: the thin layers run the shared plans
alike (requests, retries with one messageId, paging, typed errors), and the public names."""

from __future__ import annotations

import json
from typing import Any

import httpx
import notify_relay_client
import pytest
from notify_relay_client import (
    AsyncClient,
    Client,
    MessageStatus,
    Retries,
    ServerError,
    SigV4Auth,
    ValidationError,
)

FAST = Retries(max_retries=3, initial_delay=0.001, max_delay=0.005)


def message(message_id: str) -> dict[str, Any]:
    return {"messageId": message_id, "senderId": "s", "status": "DELIVERED",
            "targetUrl": "http://p/ok", "method": "POST", "headers": {}, "correlationId": "c",
            "timestamp": None, "destination": "p:80", "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z", "nextAttemptAt": None,
            "deliveredAt": "2026-01-01T00:00:00.5Z", "attemptCount": 1, "maxAttempts": 3,
            "lastStatusCode": 200, "lastError": None, "attempts": []}


class FakeRelay:
    """Submissions fail once with 503, then are accepted; lists are paged by 2."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.ids = [f"m-{i}" for i in range(5)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/v1/messages":
            body = json.loads(request.content)
            if len(self.requests) == 1:
                return httpx.Response(503, json={"code": "SYSTEM_ERROR", "detail": "busy"})
            return httpx.Response(202, json={
                "messageId": body["messageId"], "senderId": "s", "status": "QUEUED",
                "stored": True, "queued": True, "duplicate": False, "correlationId": "c"})
        if request.url.path == "/v1/messages":
            start = int(request.url.params.get("cursor", "0"))
            end = start + int(request.url.params["limit"])
            return httpx.Response(200, json={
                "items": [message(i) for i in self.ids[start:end]],
                "nextCursor": str(end) if end < len(self.ids) else None})
        return httpx.Response(400, json={
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "targetUrl: bad", "code": "VALIDATION_ERROR", "correlationId": "k",
            "errors": [{"field": "targetUrl", "message": "bad"}]})


def check(relay: FakeRelay, submitted: Any, listed: list[Any]) -> None:
    first, second = relay.requests[:2]
    assert first.content == second.content  # the same messageId on the retry
    assert json.loads(first.content)["messageId"] == submitted.message_id
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "Bearer k1"
    assert first.headers["user-agent"].startswith("notify-relay-client-python/")
    assert [m.message_id for m in listed] == relay.ids
    assert all(m.status is MessageStatus.DELIVERED for m in listed)
    pages = [r for r in relay.requests if r.method == "GET" and r.url.path == "/v1/messages"]
    assert [r.url.params.get("cursor") for r in pages] == [None, "2", "4"]
    assert all(r.url.params["senderId"] == "s" for r in pages)


def test_sync_client() -> None:
    relay = FakeRelay()
    with Client("http://relay", "k1", sender_id="s", retries=FAST,
                transport=httpx.MockTransport(relay)) as client:
        submitted = client.submit("http://p/ok", body={"a": 1})
        listed = list(client.list(page_size=2))
        with pytest.raises(ValidationError) as raised:
            client.get("nope")
    check(relay, submitted, listed)
    assert raised.value.errors[0].field == "targetUrl"


@pytest.mark.anyio
async def test_async_client() -> None:
    relay = FakeRelay()
    async with AsyncClient("http://relay", "k1", sender_id="s", retries=FAST,
                           transport=httpx.MockTransport(relay)) as client:
        submitted = await client.submit("http://p/ok", body={"a": 1})
        listed = [m async for m in client.list(page_size=2)]
        with pytest.raises(ValidationError) as raised:
            await client.get("nope")
    check(relay, submitted, listed)
    assert raised.value.errors[0].field == "targetUrl"


def test_base_url_with_a_stage_path() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=message("m"))

    with Client("https://api.example/prod/", transport=httpx.MockTransport(handler)) as client:
        client.get("m")
    assert seen == ["https://api.example/prod/v1/messages/m"]


def test_server_errors_spend_the_retries() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502, text="<html>bad gateway</html>")

    client = Client("http://relay", retries=FAST, transport=httpx.MockTransport(handler))
    with client, pytest.raises(ServerError) as raised:
        client.get("m")
    assert len(calls) == 4
    assert (raised.value.code, raised.value.detail) == ("HTTP_502", "<html>bad gateway</html>")


def test_sigv4_signs_each_try() -> None:
    botocore_session = pytest.importorskip("botocore.session")
    session = botocore_session.Session()
    session.set_credentials("AKIDEXAMPLE", "secret", "token-1")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) == 1 else 200, json=message("m"))

    with Client("https://api.example/prod", auth=SigV4Auth("eu-west-1", session),
                retries=FAST, transport=httpx.MockTransport(handler)) as client:
        client.get("m")
    for request in seen:
        authorization = request.headers["authorization"]
        assert authorization.startswith(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        assert "/eu-west-1/execute-api/aws4_request" in authorization
        assert "SignedHeaders=host;x-amz-date;x-amz-security-token" in authorization
        assert request.headers["x-amz-security-token"] == "token-1"


EXPORTED = {
    "FINAL_STATUSES", "UNSET", "ApiError", "AsyncClient", "Attempt", "AttemptOutcome",
    "AuthenticationError", "BatchItemError", "BreakerState", "CallbackEvent", "CallbackState",
    "Client", "ConflictError", "Destination", "FieldError", "ForbiddenError",
    "IdempotencyConflictError", "InvalidStateError", "Message", "MessageStatus",
    "NotFoundError", "NotifyRelayError", "PartnerResponse", "RateLimitedError", "ReplayResult",
    "Retries", "RetryPolicy", "ServerError", "SigV4Auth", "Submission", "SubmitOptions",
    "SubmitResult", "TransportError", "ValidationError", "VerifiedWebhook", "WaitTimeoutError",
    "WebhookVerificationError", "WebhookVerifier", "__version__", "verify_webhook",
}


def test_exported_members() -> None:
    assert set(notify_relay_client.__all__) == EXPORTED
    for name in notify_relay_client.__all__:
        member = getattr(notify_relay_client, name)
        module = getattr(member, "__module__", "notify_relay_client")
        assert module.startswith("notify_relay_client"), name


def test_sync_and_async_clients_offer_the_same_calls() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in vars(cls) if not n.startswith("_")}

    assert public(Client) - {"close"} == public(AsyncClient) - {"aclose"}
