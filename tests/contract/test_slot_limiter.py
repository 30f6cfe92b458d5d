"""The SlotLimiter contract, on DynamoDB (moto's server).

DynamoDB is the only adapter of this port: the embedded gate counts attempts in flight in
its own memory (one process delivers from one database), so there is no other
implementation to run the suite against. The clock is injected so that leases end on cue.
"""

from __future__ import annotations

import asyncio

import pytest

from notify_relay.adapters.aws.destinations import DynamoSlotLimiter, slot_key
from notify_relay.domain.destination import DestinationKey
from tests.aws.moto import AwsResources, client

pytestmark = pytest.mark.anyio
KEY = DestinationKey("s", "api.partner.example:443")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_limiter(aws: AwsResources, clock: Clock) -> DynamoSlotLimiter:
    return DynamoSlotLimiter(client("dynamodb", aws.endpoint), aws.destinations_table,
                             clock=clock)


@pytest.fixture
def limiter(aws: AwsResources, clock: Clock) -> DynamoSlotLimiter:
    return make_limiter(aws, clock)


@pytest.fixture
def other(aws: AwsResources, clock: Clock) -> DynamoSlotLimiter:
    """Another process (Lambda environment) sharing the same slots."""
    return make_limiter(aws, clock)


async def fill(limiter: DynamoSlotLimiter, limit: int, lease: float = 60.0) -> list[str]:
    """Every slot below `limit`: random tries may miss a free slot, so ask until full."""
    tokens: list[str] = []
    for _ in range(limit * 20):
        token = await limiter.acquire(KEY, limit, lease)
        if token is not None:
            tokens.append(token)
        if len(tokens) == limit:
            return tokens
    raise AssertionError(f"only {len(tokens)} of {limit} slots were taken")


async def test_acquire_up_to_the_limit_then_none(limiter: DynamoSlotLimiter,
                                                 other: DynamoSlotLimiter) -> None:
    tokens = await fill(limiter, 5)
    assert len({t.split(".")[0] for t in tokens}) == 5
    for _ in range(10):
        assert await limiter.acquire(KEY, 5, 60.0) is None
        assert await other.acquire(KEY, 5, 60.0) is None  # refused by the conditions


async def test_two_processes_share_the_limit(limiter: DynamoSlotLimiter,
                                             other: DynamoSlotLimiter) -> None:
    mine = await fill(limiter, 2)
    theirs = [t for _ in range(40) if (t := await other.acquire(KEY, 4, 60.0)) is not None]
    assert len(theirs) == 2
    assert {t.split(".")[0] for t in mine}.isdisjoint(t.split(".")[0] for t in theirs)
    assert await limiter.in_use(KEY, 4) == 4


async def test_a_small_limit_is_tried_whole(limiter: DynamoSlotLimiter) -> None:
    # no luck involved: with a limit within the tries, every slot is tried
    first = await limiter.acquire(KEY, 2, 60.0)
    second = await limiter.acquire(KEY, 2, 60.0)
    assert first is not None
    assert second is not None
    assert await limiter.acquire(KEY, 2, 60.0) is None


async def test_release_frees_one(limiter: DynamoSlotLimiter) -> None:
    tokens = await fill(limiter, 3)
    await limiter.release(KEY, tokens[1])
    assert await limiter.in_use(KEY, 3) == 2
    again = await limiter.acquire(KEY, 3, 60.0)
    assert again is not None
    assert again.split(".")[0] == tokens[1].split(".")[0]  # the freed slot, and no other
    assert await limiter.acquire(KEY, 3, 60.0) is None


async def test_in_use_counts_unexpired_leases(limiter: DynamoSlotLimiter, clock: Clock) -> None:
    assert await limiter.in_use(KEY, 4) == 0
    await fill(limiter, 2, lease=10.0)
    assert await limiter.in_use(KEY, 4) == 2
    assert await limiter.in_use(DestinationKey("s", "elsewhere:443"), 4) == 0
    assert await limiter.in_use(DestinationKey("other", KEY.name), 4) == 0
    clock.now += 11.0
    assert await limiter.in_use(KEY, 4) == 0


async def test_in_use_counts_beyond_one_batch(limiter: DynamoSlotLimiter) -> None:
    await fill(limiter, 3)
    assert await limiter.in_use(KEY, 250) == 3  # 250 keys: three BatchGetItem calls


async def test_an_expired_lease_is_taken_over(limiter: DynamoSlotLimiter,
                                              other: DynamoSlotLimiter, clock: Clock) -> None:
    (old,) = await fill(limiter, 1, lease=5.0)
    assert await other.acquire(KEY, 1, 5.0) is None
    clock.now += 6.0  # its holder died: the lease ends by itself
    new = await other.acquire(KEY, 1, 5.0)
    assert new is not None
    assert new != old
    # the old holder's late release does not free the new holder's slot
    await limiter.release(KEY, old)
    assert await limiter.in_use(KEY, 1) == 1
    assert await limiter.acquire(KEY, 1, 5.0) is None
    assert await other.acquire(KEY, 1, 5.0) is None


async def test_another_holders_token_cannot_release(limiter: DynamoSlotLimiter,
                                                    other: DynamoSlotLimiter,
                                                    aws: AwsResources) -> None:
    (mine,) = await fill(limiter, 1)
    index = mine.split(".")[0]
    for forged in (f"{index}.{'0' * 32}", "not-a-token", f"{index}.", ""):
        await other.release(KEY, forged)
        await limiter.release(KEY, forged)
    await limiter.release(DestinationKey("s", "elsewhere:443"), mine)  # right token, wrong key
    assert await limiter.in_use(KEY, 1) == 1
    assert await limiter.acquire(KEY, 1, 60.0) is None
    item = client("dynamodb", aws.endpoint).get_item(
        TableName=aws.destinations_table, Key=slot_key(KEY, int(index)))["Item"]
    assert item["token"]["S"] == mine.split(".", 1)[1]
    await limiter.release(KEY, mine)
    assert await limiter.in_use(KEY, 1) == 0


async def test_slots_are_per_destination(limiter: DynamoSlotLimiter) -> None:
    await fill(limiter, 2)
    assert await limiter.acquire(DestinationKey("s", "elsewhere:443"), 2, 60.0) is not None
    assert await limiter.acquire(DestinationKey("other", KEY.name), 2, 60.0) is not None


async def test_concurrent_acquires_never_exceed_the_limit(aws: AwsResources,
                                                          clock: Clock) -> None:
    """The strict bound when processes race for the same slots (moto is serialized like
    DynamoDB: tests/aws/moto.py); within one process, tries never collide."""
    processes = [make_limiter(aws, clock) for _ in range(5)]
    results = await asyncio.gather(*(p.acquire(KEY, 3, 60.0) for p in processes
                                     for _ in range(4)))
    taken = [r for r in results if r is not None]
    assert 1 <= len(taken) <= 3
    assert len({t.split(".")[0] for t in taken}) == len(taken)
    assert await processes[0].in_use(KEY, 3) == len(taken)


async def test_one_process_fills_its_limit_at_once(limiter: DynamoSlotLimiter) -> None:
    results = await asyncio.gather(*(limiter.acquire(KEY, 8, 60.0) for _ in range(8)))
    assert all(r is not None for r in results)  # no try lost to a sibling's
    assert await limiter.in_use(KEY, 8) == 8
