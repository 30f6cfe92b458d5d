"""The FastAPI app in-process (httpx's ASGI transport) on the in-memory adapters: the
API's own rules, fast. The same behaviour over real sockets is in tests/e2e."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from notify_relay.adapters.memory import MemoryQueue, MemoryStore
from notify_relay.adapters.prometheus import PrometheusObserver
from notify_relay.api.app import create_app
from notify_relay.auth import Authenticator
from notify_relay.bootstrap import NoDelivery
from notify_relay.context import new_correlation_id
from notify_relay.domain.ratelimit import RateLimiter
from notify_relay.gate import Gate
from notify_relay.runtime import Runtime
from notify_relay.service import Relay

pytestmark = pytest.mark.anyio


def runtime(**changes: object) -> Runtime:
    store = MemoryStore()
    rt = Runtime(Relay(store, MemoryQueue(), NoDelivery(), Gate(store.destinations)),
                 metrics=PrometheusObserver())
    for name, value in changes.items():
        setattr(rt, name, value)
    return rt


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime(
        limiter=RateLimiter(rate_per_second=0.001, burst=2))))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


def message(i: int) -> dict[str, str]:
    return {"messageId": f"m{i}", "targetUrl": "https://partner.example/hook"}


async def test_rate_limited_sender_gets_429_with_retry_after(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/messages", json=message(1))).status_code == 202
    assert (await client.post("/v1/messages", json=message(2))).status_code == 202
    limited = await client.post("/v1/messages", json=message(3))
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1
    # other senders have their own bucket
    other = await client.post("/v1/messages", json={**message(4), "senderId": "other"})
    assert other.status_code == 202


async def test_correlation_id_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"X-Correlation-Id": "abc-123"})
    assert given.headers["x-correlation-id"] == "abc-123"
    made = [(await client.get("/healthz")).headers["x-correlation-id"] for _ in range(50)]
    assert len(set(made)) == 50
    for cid in made:  # a UUID of version 4, written as uuid4 writes one
        assert str(uuid.UUID(cid)) == cid
        assert (uuid.UUID(cid).version, uuid.UUID(cid).variant) == (4, uuid.RFC_4122)
    for kept in ("a b", "order\t42", "x" * 200):  # a header's value, in ASCII
        echoed = await client.get("/healthz", headers={"X-Correlation-Id": kept})
        assert echoed.headers["x-correlation-id"] == kept
    for padded in ("  trimmed", "trimmed \t"):  # whitespace around is not the value's
        echoed = await client.get("/healthz", headers={"X-Correlation-Id": padded})
        assert echoed.headers["x-correlation-id"] == "trimmed"
    for replaced in ("x" * 201, "caf\u00e9".encode(), b"a\x01b"):
        weird = await client.get("/healthz", headers={"X-Correlation-Id": replaced})
        assert str(uuid.UUID(weird.headers["x-correlation-id"])) == weird.headers[
            "x-correlation-id"]


async def test_unexpected_failure_is_a_problem_document() -> None:
    class BrokenStore(MemoryStore):
        async def create(self, message: object) -> object:  # type: ignore[override]
            raise OSError("disk on fire")

    rt = runtime()
    rt.relay.store = BrokenStore()
    transport = httpx.ASGITransport(app=create_app(rt), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        response = await c.post("/v1/messages", json=message(1),
                                headers={"X-Correlation-Id": "c-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["code"], body["correlationId"]) == ("SYSTEM_ERROR", "c-500")
    assert "disk on fire" not in response.text


async def test_readyz_reports_a_failing_store() -> None:
    class DownStore(MemoryStore):
        async def ping(self) -> None:
            raise ConnectionError("down")

    rt = runtime()
    rt.relay.store = DownStore()
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "SYSTEM_ERROR"


async def test_keys_configured_scope_reads() -> None:
    rt = runtime(auth=Authenticator.from_keys({"ka": "a", "kb": "b"}))
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        created = await c.post("/v1/messages", json=message(1),
                               headers={"Authorization": "Bearer ka"})
        assert created.json()["senderId"] == "a"
        mine = await c.get("/v1/messages/m1", headers={"Authorization": "Bearer ka"})
        theirs = await c.get("/v1/messages/m1", headers={"Authorization": "Bearer kb"})
        # with keys, the senderId query parameter cannot widen the scope
        spoof = await c.get("/v1/messages/m1?senderId=a", headers={"Authorization": "Bearer kb"})
    assert mine.status_code == 200
    assert theirs.status_code == 404
    assert spoof.status_code == 403


def test_made_correlation_ids_are_uuid4_with_every_random_bit_used() -> None:
    ids = [uuid.UUID(new_correlation_id()) for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert {(u.version, u.variant) for u in ids} == {(4, uuid.RFC_4122)}
    varying = 0
    for u in ids:
        varying |= u.int ^ ids[0].int
    assert bin(varying).count("1") == 122  # all but the 6 fixed bits of a version 4 UUID
