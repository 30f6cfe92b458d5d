"""AsyncClient against the real server: the same calls, awaited, with the same results."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from notify_relay_client import (
    AsyncClient,
    IdempotencyConflictError,
    InvalidStateError,
    MessageStatus,
    NotFoundError,
    RetryPolicy,
    ValidationError,
    WaitTimeoutError,
)

from tests.client.conftest import FAST
from tests.e2e.api_client import ServerProcess
from tests.partner import Partner

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture
async def relay(server: ServerProcess, sender: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.base_url, sender_id=sender, retries=FAST) as client:
        yield client


async def test_messages(relay: AsyncClient, partner: Partner, sender: str) -> None:
    submitted = await relay.submit(partner.url(f"/ok?{sender}"), body="hello")
    assert (submitted.status, submitted.duplicate) == (MessageStatus.QUEUED, False)
    assert (await relay.submit(partner.url(f"/ok?{sender}"), body="hello",
                               message_id=submitted.message_id)).duplicate
    with pytest.raises(IdempotencyConflictError):
        await relay.submit(partner.url(f"/ok?{sender}"), message_id=submitted.message_id)
    done = await relay.wait_for(submitted.message_id, timeout=10)
    assert done.status is MessageStatus.DELIVERED
    assert await relay.get(submitted.message_id) == done
    (got,) = partner.received(f"/ok?{sender}")
    assert got.body == b"hello"

    failing = [(await relay.submit(partner.url("/status/410"))).message_id for _ in range(4)]
    for message_id in failing:
        await relay.wait_for(message_id, timeout=10)
    listed = [m.message_id async for m in relay.list(page_size=2)]
    assert listed == [*failing[::-1], submitted.message_id]
    failed = [m.message_id async for m in relay.list(MessageStatus.FAILED, page_size=3)]
    assert failed == failing[::-1]
    assert (await relay.retry(failing[0])).status is not MessageStatus.FAILED
    # its new attempt is refused (410) like the first: FAILED again, sooner or later; the
    # replay counted 3 only when it came first, which a fast server does not promise
    assert (await relay.wait_for(failing[0], timeout=10)).status is MessageStatus.FAILED
    replayed = await relay.replay(limit=10)
    assert (replayed.replayed, replayed.more) == (4, False)
    with pytest.raises(InvalidStateError):
        await relay.retry(submitted.message_id)


async def test_destinations_cancel_and_errors(relay: AsyncClient, partner: Partner) -> None:
    assert (await relay.pause("async-held")).paused
    message_id = (await relay.submit(partner.url("/ok"), destination="async-held")).message_id
    with pytest.raises(WaitTimeoutError):
        await relay.wait_for(message_id, timeout=0.2)
    assert (await relay.cancel(message_id)).status is MessageStatus.CANCELLED
    changed = await relay.update_destination("async-held", paused=False, rate_per_second=5)
    assert (changed.paused, changed.rate_per_second) == (False, 5.0)
    assert (await relay.resume("async-held")).paused is False
    assert [d.destination async for d in relay.destinations()] == ["async-held"]
    assert (await relay.destination("async-held")).pending == 0
    with pytest.raises(NotFoundError):
        await relay.get("nothing")
    with pytest.raises(ValidationError) as raised:
        await relay.submit(partner.url("/ok"), retry_policy=RetryPolicy(max_attempts=500))
    assert [e.field for e in raised.value.errors] == ["retryPolicy.maxAttempts"]
