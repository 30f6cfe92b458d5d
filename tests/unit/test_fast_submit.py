"""POST /v1/messages answers alike through the fast path and through the FastAPI route:
the same requests, in the same order, to an app with the fast path and to one without,
each on its own in-memory store, give the same statuses, headers and documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.adapters.prometheus import PrometheusObserver
from notify_relay.api import app as app_module
from notify_relay.api.app import create_app
from notify_relay.api.fast_submit import FastSubmit
from notify_relay.api.strict_json import StrictJsonRequest
from notify_relay.auth import Authenticator
from notify_relay.bootstrap import NoDelivery
from notify_relay.domain.ratelimit import RateLimiter
from notify_relay.gate import Gate
from notify_relay.runtime import Runtime
from notify_relay.service import Relay

pytestmark = pytest.mark.anyio
KEY = {"Authorization": "Bearer key-a"}
OK = {"messageId": "m1", "targetUrl": "https://partner.example/hook", "body": {"n": 1}}

# (headers, body): each sent with a fixed correlation id
REQUESTS: list[tuple[dict[str, str], Any]] = [
    (KEY, OK),                                              # accepted
    (KEY, OK),                                              # duplicate
    (KEY, {**OK, "body": {"n": 2}}),                        # conflict
    (KEY, {**OK, "messageId": "m2", "senderId": "team-a"}),  # accepted, sender named
    (KEY, {**OK, "messageId": "m3", "senderId": "team-b"}),  # not this key's sender
    ({}, {**OK, "messageId": "m4"}),                        # no key
    ({"Authorization": "Bearer nope"}, {**OK, "messageId": "m5"}),
    (KEY, {**OK, "messageId": "m6", "targetUrl": "http://10.0.0.1/"}),  # refused target
    (KEY, {**OK, "messageId": "bad id!"}),                  # validation
    (KEY, {**OK, "messageId": "m7", "method": "TRACE"}),
    (KEY, "[1, 2]"),                                        # not an object
    (KEY, '{"messageId": "m8", "messageId": "m9"}'),        # a key twice
    (KEY, "{nope"),                                         # not JSON
    (KEY, {**OK, "messageId": "m10"}),                      # accepted, then rate limited
    (KEY, {**OK, "messageId": "m11"}),
    (KEY, {**OK, "messageId": "m12"}),
]


def runtime() -> Runtime:
    store = MemoryStore()
    return Runtime(Relay(store, MemoryQueue(), NoDelivery(), Gate(store.destinations)),
                   auth=Authenticator.from_keys({"key-a": "team-a"}),
                   metrics=PrometheusObserver(),
                   limiter=RateLimiter(rate_per_second=0.001, burst=7))


async def answers(app: Any) -> AsyncIterator[tuple[int, dict[str, str], Any]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        for n, (headers, body) in enumerate(REQUESTS):
            sent = {**headers, "X-Correlation-Id": f"cid-{n}",
                    "Content-Type": "application/json"}
            content = body if isinstance(body, str) else httpx.Request(
                "POST", "http://x", json=body).content
            response = await client.post("/v1/messages", content=content, headers=sent)
            yield (response.status_code,
                   {k: v for k, v in response.headers.items() if k != "date"},
                   response.json())


async def test_the_fast_path_answers_as_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [a async for a in answers(create_app(runtime()))]

    class Passthrough(FastSubmit):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    monkeypatch.setattr(app_module, "FastSubmit", Passthrough)
    routed = [a async for a in answers(create_app(runtime()))]
    assert [status for status, _, _ in fast] == [
        202, 200, 409, 202, 403, 401, 401, 422, 400, 400, 400, 400, 400, 202, 202, 429]
    for n, (mine, theirs) in enumerate(zip(fast, routed, strict=True)):
        assert mine == theirs, f"request {n}: {REQUESTS[n]}"


async def test_the_fast_path_does_not_go_through_the_route(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fast path is for: an accepted submission never reaches FastAPI's router."""
    app = create_app(runtime())
    routed: list[str] = []
    real = StrictJsonRequest.json

    async def counting(self: StrictJsonRequest) -> Any:
        routed.append(self.url.path)
        return await real(self)

    monkeypatch.setattr(StrictJsonRequest, "json", counting)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        assert (await client.post("/v1/messages", json=OK, headers=KEY)).status_code == 202
        assert (await client.post("/v1/messages", json={"x": 1},
                                  headers=KEY)).status_code == 400
    assert routed == ["/v1/messages"]  # only the invalid one


async def test_a_request_handed_on_to_the_route_is_parsed_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The route takes the body the fast path parsed: parsed again deeper in the stack, a
    body nested ~965 levels that the fast path took was refused as nested too deeply (a
    400) where its rate limit's 429 was due, and each refusal paid the parse twice."""
    from notify_relay.api import fast_submit, strict_json

    parses: list[int] = []
    real = strict_json.loads

    def counting(body: bytes) -> Any:
        parses.append(len(body))
        return real(body)

    monkeypatch.setattr(fast_submit, "loads", counting)
    monkeypatch.setattr(strict_json, "loads", counting)
    transport = httpx.ASGITransport(app=create_app(runtime()))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        refused = [(await client.post("/v1/messages", json=body, headers=KEY)).status_code
                   for body in ({**OK, "messageId": "bad id!"},  # the route names the field
                                {**OK, "senderId": "team-b"})]    # not this key's sender
    assert refused == [400, 403]
    assert len(parses) == 2  # once each


async def test_the_parsed_body_leaves_the_scope_with_the_route() -> None:
    """uvicorn keeps a connection's last scope until its next request: a parsed body left
    in it stayed alive on every idle keep-alive connection (12 held 250 MiB, helper-51)."""
    from notify_relay.api.strict_json import PARSED_BODY

    seen: list[object] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get(PARSED_BODY))
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"messageId": "bad id!"}',
                "more_body": False}

    async def send(message: Any) -> None:
        pass

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/messages",
                             "headers": []}
    await FastSubmit(route, runtime())(scope, receive, send)
    assert seen == [{"messageId": "bad id!"}]  # the route had it
    assert PARSED_BODY not in scope  # and it went with it
