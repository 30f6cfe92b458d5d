"""uvicorn with the guarded protocol, on 127.0.0.1, in front of a tiny app: what it answers
for uvicorn itself (the concurrency limit), in the contract's shape."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from notify_relay.api.guarded_protocol import guarded_protocol
from tests.raw_http import problem_of, status_of
from tests.sockets import free_port

pytestmark = pytest.mark.anyio


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(1.0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(limit: int) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        slow_app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
        http=guarded_protocol(10.0, 60.0), limit_concurrency=limit))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def ask(port: int, correlation_id: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n"
    if correlation_id:
        head += b"X-Correlation-Id: " + correlation_id + b"\r\n"
    writer.write(head + b"\r\n")
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return answer


async def test_beyond_the_concurrency_limit_a_problem_with_retry_after() -> None:
    """uvicorn's own answer there was plain text, with no correlation id."""
    async with serving(limit=3) as port:  # uvicorn's count takes in the asking connection
        busy = [asyncio.create_task(ask(port)) for _ in range(2)]
        await asyncio.sleep(0.3)  # both in the app, the third connection is one too many
        refused = await ask(port, b"over-the-limit")
        answered = await asyncio.gather(*busy)
    assert status_of(refused) == 503, refused
    fields, document = problem_of(refused)  # problem+json, its correlation id in both
    assert fields["retry-after"] == "1"
    assert fields["x-correlation-id"] == "over-the-limit"
    assert (document["code"], document["correlationId"]) == ("SYSTEM_ERROR", "over-the-limit")
    assert all(a.startswith(b"HTTP/1.1 200") for a in answered)  # the two in place went on
