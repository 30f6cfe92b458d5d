"""The DestinationStore contract, run against every adapter (memory, SQLite file, DynamoDB)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from notify_relay.domain.destination import (
    Breaker,
    BreakerState,
    Destination,
    DestinationKey,
    DestinationSettings,
)
from notify_relay.domain.errors import StaleWrite
from notify_relay.domain.message import MessageKey
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from notify_relay.ports import DestinationStore, MessageStore
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio
Stores = tuple[MessageStore, DestinationStore]


def full(key: DestinationKey) -> Destination:
    return Destination(
        key,
        settings=DestinationSettings(paused=True, max_concurrency=7, rate_per_second=2.5),
        breaker=Breaker(BreakerState.OPEN, 5, 2, NOW, NOW + timedelta(seconds=30), None),
        concurrency=3.5, last_decrease_at=NOW, held_until=NOW + timedelta(seconds=9),
        rate_next_at=NOW, last_attempt_at=NOW, last_success_at=NOW - timedelta(hours=1),
        last_error="HTTP 503")


async def test_save_then_get_round_trips_every_field(stores: Stores) -> None:
    _, destinations = stores
    key = DestinationKey("s", "api.partner.example:443")
    saved = await destinations.save(full(key))
    assert saved.version == 1
    assert await destinations.get(key) == saved
    assert replace(saved, version=0) == full(key)


async def test_save_is_conditional_on_the_version(stores: Stores) -> None:
    _, destinations = stores
    key = DestinationKey("s", "d")
    first = await destinations.save(Destination(key))
    with pytest.raises(StaleWrite):
        await destinations.save(Destination(key))  # version 0: "none stored", but one is
    second = await destinations.save(replace(first, last_error="x"))
    assert second.version == 2
    with pytest.raises(StaleWrite):
        await destinations.save(replace(first, last_error="stale"))
    stored = await destinations.get(key)
    assert stored is not None
    assert stored.last_error == "x"


async def test_unknown_destination_is_none(stores: Stores) -> None:
    _, destinations = stores
    assert await destinations.get(DestinationKey("s", "nowhere:443")) is None


async def test_a_message_puts_its_destination_on_record(stores: Stores) -> None:
    messages, destinations = stores
    message = make_message("m-1", "s", url="https://api.partner.example/hook")
    await messages.create(message)
    key = DestinationKey("s", "api.partner.example:443")
    found = await destinations.get(key)
    assert found is not None
    assert found.breaker.state is BreakerState.CLOSED
    assert found.settings == DestinationSettings()
    # a record made by a message can then be saved like any other
    saved = await destinations.save(replace(found, settings=DestinationSettings(paused=True)))
    stored = await destinations.get(key)
    assert stored == saved


async def test_list_by_name_with_paging_and_state_filter(stores: Stores) -> None:
    messages, destinations = stores
    for name in ("c:1", "a:1", "b:1", "e:1"):
        await destinations.save(Destination(DestinationKey("s", name)))
    await messages.create(replace(make_message("m-1", "s"), destination="d:1"))
    await destinations.save(Destination(DestinationKey("other", "a:0")))
    opened = await destinations.get(DestinationKey("s", "b:1"))
    assert opened is not None
    await destinations.save(replace(opened, breaker=Breaker(BreakerState.OPEN, 5, 1, NOW, NOW)))

    names: list[str] = []
    cursor = None
    while True:
        page = await destinations.list("s", None, 2, cursor)
        names += [d.key.name for d in page.items]
        assert len(page.items) <= 2
        cursor = page.next_cursor
        if cursor is None:
            break
    assert names == ["a:1", "b:1", "c:1", "d:1", "e:1"]
    only_open = await destinations.list("s", BreakerState.OPEN, 10, None)
    assert [d.key.name for d in only_open.items] == ["b:1"]
    assert only_open.next_cursor is None


async def test_list_rejects_a_forged_cursor(stores: Stores) -> None:
    _, destinations = stores
    with pytest.raises(ValueError, match="cursor"):
        await destinations.list("s", None, 10, "not-a-cursor!")


async def test_pending_counts_messages_not_final(stores: Stores) -> None:
    messages, destinations = stores
    key = DestinationKey("s", "partner:443")
    assert await destinations.pending(key) == 0
    for i in range(3):
        await messages.create(replace(make_message(f"m-{i}", "s"), destination="partner:443"))
    await messages.create(replace(make_message("elsewhere", "s"), destination="other:443"))
    stored = await messages.get(MessageKey("s", "m-0"))
    assert stored is not None
    delivered = stored.start_attempt(NOW).finish_attempt(
        AttemptResult(status_code=200), Decision(Outcome.SUCCESS), started_at=NOW,
        duration_ms=1, now=NOW)
    await messages.update(delivered)
    assert await destinations.pending(key) == 2


async def test_active_holds_every_saved_record(stores: Stores) -> None:
    _, destinations = stores
    saved = await destinations.save(full(DestinationKey("s", "x:1")))
    assert saved in list(await destinations.active())
