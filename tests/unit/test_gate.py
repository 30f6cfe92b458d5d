"""The Gate and the Relay together on the in-memory adapters: what a destination's state
does to attempts, with a controlled clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.adapters.memory import MemoryDestinationStore, MemoryQueue, MemoryStore
from notify_relay.api.submission import Submission
from notify_relay.domain.destination import (
    Blocked,
    BreakerConfig,
    BreakerState,
    Destination,
    DestinationKey,
    Rules,
)
from notify_relay.domain.errors import StaleWrite
from notify_relay.domain.message import MessageKey
from notify_relay.domain.retry import AttemptResult, ErrorKind
from notify_relay.domain.status import Status
from notify_relay.gate import Gate, Hold, Ticket
from notify_relay.ports import NullObserver, OutboundRequest
from notify_relay.service import Relay

pytestmark = pytest.mark.anyio
RULES = Rules(default_concurrency=4, breaker=BreakerConfig(failures=3, cooldown=30.0))
DEST = DestinationKey("s", "p.example:443")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Partner:
    """A deliverer that answers with whatever `answer` is set to, and counts."""

    def __init__(self) -> None:
        self.answer = AttemptResult(status_code=200)
        self.sent: list[OutboundRequest] = []

    async def send(self, request: OutboundRequest) -> AttemptResult:
        self.sent.append(request)
        return self.answer


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.queue = MemoryQueue(self.clock)
        self.partner = Partner()
        self.ready_calls = 0
        self.gate = Gate(self.store.destinations, RULES, clock=self.clock, rand=lambda: 0.0)
        self.gate.on_ready = self._ready
        self.relay = Relay(self.store, self.queue, self.partner, self.gate, clock=self.clock,
                           rand=lambda: 0.0)

    def _ready(self) -> None:
        self.ready_calls += 1

    async def submit(self, message_id: str, **fields: object) -> None:
        submission = Submission.model_validate(
            {"messageId": message_id, "targetUrl": "https://p.example/hook", **fields})
        await self.relay.submit(submission.to_new_message(), "s", "corr")

    async def run_due(self) -> int:
        """One worker pass: claim what may start, take tickets, deliver."""
        claims = await self.queue.claim(100, 60, self.gate.slots)
        tickets = [(c, await self.relay.admit(c, DEST)) for c in claims]
        for claim, ticket in tickets:
            if ticket is not None:
                await self.relay.deliver(claim, ticket)
        return sum(1 for _, t in tickets if t is not None)

    async def message(self, message_id: str) -> object:
        return await self.relay.get(MessageKey("s", message_id))


async def opened_and_cooled(w: World) -> None:
    """Three failures open the breaker (RULES), then its cool-down (30 s) passes."""
    w.partner.answer = AttemptResult(status_code=503)
    for i in range(3):
        await w.submit(f"m{i}")
    await w.run_due()
    w.clock.advance(31)


async def test_failures_open_the_breaker_and_waiting_spends_no_attempt() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=503)
    for i in range(6):
        await w.submit(f"m{i}")
    assert await w.run_due() == 4  # the cap: four attempts, the breaker opens at the third
    dest = w.gate.cached(DEST)
    assert dest.breaker.state is BreakerState.OPEN
    assert dest.breaker.next_probe_at == w.clock.now + timedelta(seconds=30)
    sent = len(w.partner.sent)

    # during the cool-down nothing is sent, and the waiting messages keep their budget
    for _ in range(3):
        w.clock.advance(9)
        assert await w.run_due() == 0
    assert len(w.partner.sent) == sent
    waiting = await w.relay.get(MessageKey("s", "m5"))
    assert waiting.attempt_count == 0
    assert waiting.status is Status.QUEUED
    assert waiting.next_attempt_at == dest.breaker.next_probe_at  # when it is expected to go


async def test_one_probe_then_close_and_everything_goes() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=503)
    for i in range(8):
        await w.submit(f"m{i}")
    await w.run_due()
    w.clock.advance(31)
    w.partner.answer = AttemptResult(status_code=200)
    sent = len(w.partner.sent)

    claims = await w.queue.claim(100, 60, w.gate.slots)
    assert len(claims) == 1  # half-open: one probe only
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    assert probe.probe
    assert isinstance(await w.gate.admit(DEST), Hold)  # the probe is in flight
    await w.gate.finish(probe, AttemptResult(status_code=200))
    assert w.gate.cached(DEST).breaker.state is BreakerState.CLOSED
    assert w.ready_calls >= 1  # the worker is woken: the destination takes work again
    await w.queue.reschedule(claims[0], w.clock.now)

    for _ in range(4):
        await w.run_due()
        w.clock.advance(10)  # past the failed messages' retry delays
    assert len(w.partner.sent) > sent
    for i in range(8):
        assert (await w.relay.get(MessageKey("s", f"m{i}"))).status is Status.DELIVERED


async def test_a_failed_probe_reopens_for_twice_as_long() -> None:
    w = World()
    w.partner.answer = AttemptResult(error_kind=ErrorKind.TIMEOUT, error="timeout after 5 s")
    for i in range(5):
        await w.submit(f"m{i}")
    await w.run_due()
    w.clock.advance(31)
    assert await w.run_due() == 1
    dest = w.gate.cached(DEST)
    assert dest.breaker.state is BreakerState.OPEN
    assert dest.breaker.openings == 2
    assert dest.breaker.next_probe_at == w.clock.now + timedelta(seconds=60)
    assert dest.last_error == "timeout after 5 s"


async def test_permanent_4xx_do_not_open_the_breaker() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=400)
    for i in range(10):
        await w.submit(f"m{i}")
    for _ in range(3):
        await w.run_due()
    assert w.gate.cached(DEST).breaker.state is BreakerState.CLOSED
    assert len(w.partner.sent) == 10


async def test_cap_holds_and_a_freed_slot_wakes_the_worker() -> None:
    w = World()
    tickets = [await w.gate.admit(DEST) for _ in range(4)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert w.gate.slots(DEST) == 0
    held = await w.gate.admit(DEST)
    assert isinstance(held, Hold)
    assert held.reason is Blocked.AT_CAP
    first = tickets[0]
    assert isinstance(first, Ticket)
    await w.gate.finish(first, AttemptResult(status_code=200))
    assert w.gate.slots(DEST) == 1
    assert w.ready_calls == 1


async def test_pause_and_resume() -> None:
    w = World()
    await w.gate.configure(DEST, paused=True)
    await w.submit("m0")
    assert await w.run_due() == 0
    assert (await w.relay.get(MessageKey("s", "m0"))).next_attempt_at is None  # unknown
    stored = await w.store.destinations.get(DEST)
    assert stored is not None
    assert stored.settings.paused
    await w.gate.configure(DEST, paused=False)
    assert await w.run_due() == 1
    assert w.partner.sent


async def test_retry_after_holds_the_whole_destination() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=429, retry_after="20")
    await w.submit("first")
    assert await w.run_due() == 1
    w.partner.answer = AttemptResult(status_code=200)
    await w.submit("second")
    assert await w.run_due() == 0  # held, though it is new and due
    assert (await w.relay.get(MessageKey("s", "second"))).next_attempt_at == \
        w.clock.now + timedelta(seconds=20)
    w.clock.advance(21)
    assert await w.run_due() == 2


async def test_rate_limits_attempt_starts() -> None:
    w = World()
    await w.gate.configure(DEST, rate_per_second=2.0)
    for i in range(5):
        await w.submit(f"m{i}")
    assert await w.run_due() == 1
    assert await w.run_due() == 0
    w.clock.advance(0.5)
    assert await w.run_due() == 1


async def test_a_cancelled_probe_gives_its_turn_back() -> None:
    w = World()
    await opened_and_cooled(w)
    last_attempt = w.gate.cached(DEST).last_attempt_at
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    assert probe.probe
    assert w.gate.cached(DEST).breaker.state is BreakerState.OPEN  # not sent: not HALF_OPEN
    w.clock.advance(1)
    await w.gate.cancel(probe)
    dest = w.gate.cached(DEST)
    # as it was: OPEN past its cool-down, no attempt since the last real one
    assert (dest.breaker.state, dest.breaker.probe_until) == (BreakerState.OPEN, None)
    assert dest.last_attempt_at == last_attempt
    again = await w.gate.admit(DEST)
    assert isinstance(again, Ticket)
    assert again.probe


async def test_a_probe_is_half_open_once_sent_and_its_transition_counted_once() -> None:
    w = World()
    transitions: list[str] = []
    w.gate.observer = Transitions(transitions)
    await opened_and_cooled(w)
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    assert transitions == ["CLOSED->OPEN"]  # admitted, not sent: nothing yet
    await w.gate.begin(probe)
    dest = w.gate.cached(DEST)
    assert dest.breaker.state is BreakerState.HALF_OPEN
    assert dest.breaker.probe_until == w.clock.now + timedelta(seconds=180)
    assert isinstance(await w.gate.admit(DEST), Hold)  # one probe in flight
    await w.gate.finish(probe, AttemptResult(status_code=200))
    assert transitions == ["CLOSED->OPEN", "OPEN->HALF_OPEN", "HALF_OPEN->CLOSED"]


async def test_a_sent_probe_with_no_verdict_leaves_it_open_for_the_next_probe() -> None:
    """A probe refused by the network policy, or cut short by a stop, says nothing of the
    partner: HALF_OPEN stayed with nothing in flight until a new message came."""
    w = World()
    transitions: list[str] = []
    w.gate.observer = Transitions(transitions)
    await opened_and_cooled(w)
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    await w.gate.begin(probe)
    await w.gate.finish(probe, AttemptResult(error_kind=ErrorKind.INTERRUPTED, error="cut"))
    dest = w.gate.cached(DEST)
    assert (dest.breaker.state, dest.breaker.probe_until) == (BreakerState.OPEN, None)
    assert dest.breaker.openings == 1  # not a failed probe: no longer cool-down
    assert transitions[-2:] == ["OPEN->HALF_OPEN", "HALF_OPEN->OPEN"]
    again = await w.gate.admit(DEST)
    assert isinstance(again, Ticket)
    assert again.probe


async def test_tickets_never_sent_leave_last_attempt_at_as_it_was() -> None:
    """lastAttemptAt is the start of an attempt that was made: two tickets admitted and
    cancelled in either order left it at a time when nothing was sent."""
    w = World()
    await w.submit("m0")
    await w.run_due()
    sent_at = w.gate.cached(DEST).last_attempt_at
    assert sent_at is not None
    w.clock.advance(5)
    first = await w.gate.admit(DEST)
    w.clock.advance(1)
    second = await w.gate.admit(DEST)
    assert isinstance(first, Ticket)
    assert isinstance(second, Ticket)
    await w.gate.cancel(first)
    await w.gate.cancel(second)
    assert w.gate.cached(DEST).last_attempt_at == sent_at


async def test_a_restart_finds_no_probe_in_flight() -> None:
    """The probe died with the process: OPEN, and the next attempt probes at once."""
    w = World()
    await opened_and_cooled(w)
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    await w.gate.begin(probe)
    assert (await w.store.destinations.get(DEST)).breaker.state is BreakerState.HALF_OPEN
    restarted = Gate(w.store.destinations, RULES, clock=w.clock)
    await restarted.start()
    assert restarted.cached(DEST).breaker.state is BreakerState.OPEN
    again = await restarted.admit(DEST)
    assert isinstance(again, Ticket)
    assert again.probe


async def test_embedded_state_survives_a_restart() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=503)
    for i in range(3):
        await w.submit(f"m{i}")
    await w.run_due()
    restarted = Gate(w.store.destinations, RULES, clock=w.clock)
    await restarted.start()
    assert restarted.cached(DEST).breaker.state is BreakerState.OPEN
    assert restarted.slots(DEST) == 0


async def test_a_probe_cut_short_by_a_restart_does_not_block_the_next() -> None:
    w = World()
    w.partner.answer = AttemptResult(status_code=503)
    for i in range(4):
        await w.submit(f"m{i}")
    await w.run_due()
    w.clock.advance(31)
    probe = await w.gate.admit(DEST)
    assert isinstance(probe, Ticket)
    assert probe.probe  # ... and the process dies with it in flight
    restarted = Gate(w.store.destinations, RULES, clock=w.clock)
    await restarted.start()
    again = await restarted.admit(DEST)
    assert isinstance(again, Ticket)
    assert again.probe


async def test_shared_gates_count_failures_together() -> None:
    """Two workers (AWS): each failure is written, so three failures in a row across both
    open the breaker for both."""
    store = MemoryDestinationStore()
    clock = Clock()
    one, two = (Gate(store, RULES, shared=True, cache_seconds=0.0, clock=clock,
                     rand=lambda: 0.0) for _ in range(2))
    failure = AttemptResult(status_code=500)
    for gate in (one, two, one):
        ticket = await gate.admit(DEST)
        assert isinstance(ticket, Ticket)
        await gate.finish(ticket, failure)
    held = await two.admit(DEST)
    assert isinstance(held, Hold)
    assert held.reason is Blocked.OPEN
    clock.advance(31)
    probes = [await one.admit(DEST), await two.admit(DEST)]
    assert sum(isinstance(p, Ticket) and p.probe for p in probes) == 1  # one probe in all


async def test_two_workers_with_stale_caches_send_one_probe() -> None:
    """Both read the breaker OPEN with its probe due; the conditional write lets one win."""
    store = MemoryDestinationStore()
    clock = Clock()
    one, two = (Gate(store, RULES, shared=True, cache_seconds=3600.0, clock=clock,
                     rand=lambda: 0.0) for _ in range(2))
    for _ in range(3):
        ticket = await one.admit(DEST)
        assert isinstance(ticket, Ticket)
        await one.finish(ticket, AttemptResult(status_code=500))
    await two.current(DEST)  # two caches the open breaker, and keeps it for an hour
    clock.advance(31)
    first = await one.admit(DEST)
    assert isinstance(first, Ticket)
    assert first.probe
    second = await two.admit(DEST)
    assert isinstance(second, Hold)
    assert second.reason is Blocked.OPEN


async def test_shared_statistics_survive_a_cache_refresh() -> None:
    """A refresh of the record must not drop what this worker has not written yet."""
    store = MemoryDestinationStore()
    clock = Clock()
    gate = Gate(store, RULES, shared=True, cache_seconds=0.0, clock=clock, rand=lambda: 0.0)
    ticket = await gate.admit(DEST)
    assert isinstance(ticket, Ticket)
    clock.advance(1)
    await gate.finish(ticket, AttemptResult(status_code=200))
    await gate.flush()
    stored = await store.get(DEST)
    assert stored is not None
    assert stored.last_attempt_at == clock.now - timedelta(seconds=1)
    assert stored.last_success_at == clock.now


async def test_shared_holds_are_spread_and_sized_to_the_reason() -> None:
    """Held records go back to SQS: paused ones for a while, while a probe decides only
    briefly, and an open breaker's backlog spread after its cool-down, not all at once."""
    store = MemoryDestinationStore()
    clock = Clock()
    gate = Gate(store, RULES, shared=True, cache_seconds=0.0, clock=clock, rand=lambda: 1.0)
    for _ in range(3):
        ticket = await gate.admit(DEST)
        assert isinstance(ticket, Ticket)
        await gate.finish(ticket, AttemptResult(status_code=500))
    cooling = await gate.admit(DEST)
    assert isinstance(cooling, Hold)
    probe_at = gate.cached(DEST).breaker.next_probe_at
    assert probe_at is not None
    assert probe_at < cooling.until <= probe_at + timedelta(seconds=30)
    clock.advance(30)
    assert isinstance(await gate.admit(DEST), Ticket)  # the probe
    deciding = await gate.admit(DEST)
    assert isinstance(deciding, Hold)
    assert deciding.until <= clock.now + timedelta(seconds=5)  # not the probe's 180 s lease
    await gate.configure(DEST, paused=True)
    paused = await gate.admit(DEST)
    assert isinstance(paused, Hold)
    assert paused.until >= clock.now + timedelta(seconds=30)


async def test_attempts_finishing_together_are_all_counted_and_none_is_lost() -> None:
    """Embedded: 32 attempts to one destination fail at once. Each sees the ones before
    (the breaker opens at the threshold and counts them all), no write is refused as
    stale, and no slot frees before the opening is known."""
    store = MemoryDestinationStore()
    slow = SlowSaves(store)
    gate = Gate(slow, Rules(default_concurrency=32, breaker=BreakerConfig(failures=5)),
                rand=lambda: 0.0)
    tickets = [await gate.admit(DEST) for _ in range(32)]
    assert all(isinstance(t, Ticket) for t in tickets)
    failure = AttemptResult(error_kind=ErrorKind.CONNECTION, error="connection refused")
    slots_seen: list[int] = []

    async def finish(ticket: Ticket | Hold) -> None:
        assert isinstance(ticket, Ticket)
        await gate.finish(ticket, failure)
        slots_seen.append(gate.slots(DEST))

    opened: list[str] = []
    gate.observer = Transitions(opened)
    await asyncio.gather(*(finish(t) for t in tickets))
    assert opened == ["CLOSED->OPEN"]  # one opening, logged and counted once
    dest = gate.cached(DEST)
    assert dest.breaker.state is BreakerState.OPEN
    assert dest.breaker.consecutive_failures == 32
    assert slots_seen == [0] * 32  # open from the fifth on, and full before that
    stored = await store.get(DEST)
    assert stored is not None
    assert stored.breaker == dest.breaker


class Transitions(NullObserver):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def breaker_transition(self, old: str, new: str) -> None:
        self.seen.append(f"{old}->{new}")


class SlowSaves:
    """A destination store whose writes take a turn of the event loop, as SQLite's group
    commit does."""

    def __init__(self, inner: MemoryDestinationStore) -> None:
        self.inner = inner

    async def save(self, destination: Destination) -> Destination:
        await asyncio.sleep(0)
        return await self.inner.save(destination)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class CountingSlowSaves(SlowSaves):
    """Slow saves (a DynamoDB round trip) that count the conditional writes refused."""

    def __init__(self, inner: MemoryDestinationStore) -> None:
        super().__init__(inner)
        self.saves = self.refused = 0

    async def save(self, destination: Destination) -> Destination:
        self.saves += 1
        await asyncio.sleep(0.001)
        try:
            return await self.inner.save(destination)
        except StaleWrite:
            self.refused += 1
            raise


async def test_a_batch_of_failures_at_one_destination_is_counted_without_contention() -> None:
    """A worker Lambda's batch of 100 records, 20 to a destination that fails them all at
    once: each failure is counted, none lost to this process's own conditional writes
    racing each other (found by bench/aws_capacity.py: 43 writes for 10 failures, 2 given
    up after 5 tries)."""
    store = CountingSlowSaves(MemoryDestinationStore())
    rules = Rules(default_concurrency=32, breaker=BreakerConfig(failures=50, cooldown=30.0))
    gate = Gate(store, rules, shared=True, cache_seconds=60.0, clock=Clock(),
                rand=lambda: 0.0)
    tickets = [await gate.admit(DEST) for _ in range(20)]
    assert all(isinstance(t, Ticket) for t in tickets)
    await asyncio.gather(*(gate.finish(t, AttemptResult(status_code=500))
                           for t in tickets if isinstance(t, Ticket)))
    stored = await store.inner.get(DEST)
    assert stored is not None
    assert stored.breaker.consecutive_failures == 20
    assert store.refused == 0


async def test_idle_destinations_in_their_default_state_leave_memory() -> None:
    """Every destination ever used stayed in memory (helper-50: 9,000 one-off ones, +19
    MiB). An idle one whose record is written and default leaves; one that is paused,
    open, held, cut, unwritten or in flight stays; one that left is read again from the
    store at its next change, its version and statistics with it (no stale write)."""
    store = MemoryDestinationStore()
    clock = Clock()
    gate = Gate(store, RULES, clock=clock, rand=lambda: 0.0)

    async def attempt(key: DestinationKey, answer: int) -> Ticket:
        ticket = await gate.admit(key)
        assert isinstance(ticket, Ticket)
        await gate.finish(ticket, AttemptResult(status_code=answer))
        return ticket

    one_off = [DestinationKey("s", f"once-{i}:443") for i in range(50)]
    for key in one_off:
        await attempt(key, 200)
    paused, failing, busy = (DestinationKey("s", f"{name}:443")
                             for name in ("paused", "failing", "busy"))
    await gate.configure(paused, paused=True)
    for _ in range(3):  # RULES: the third failure in a row opens the breaker
        await attempt(failing, 503)
    in_flight = await gate.admit(busy)
    assert isinstance(in_flight, Ticket)
    assert gate.evict_idle(0.0) == 0  # their statistics are not written yet
    await gate.flush()
    assert gate.evict_idle(3600.0) == 0  # not idle long enough
    assert gate.evict_idle(0.0) == 50
    assert gate.count_by_state() == {"CLOSED": 2, "OPEN": 1}  # paused, busy; failing
    assert gate.cached(paused).settings.paused

    stored = await store.get(one_off[0])
    assert stored is not None
    assert stored.version >= 1
    assert stored.last_success_at is not None
    clock.advance(5)
    for _ in range(3):  # durable changes (the breaker opens): written over its version
        await attempt(one_off[0], 503)
    again = await store.get(one_off[0])
    assert again is not None
    assert again.breaker.state is BreakerState.OPEN
    assert again.version > stored.version
    assert again.last_success_at == stored.last_success_at  # read back, then kept


async def with_statistics_to_flush(store: MemoryDestinationStore) -> tuple[Gate, Clock]:
    """An embedded gate over `store` whose DEST has an attempt's statistics to write."""
    clock = Clock()
    gate = Gate(store, RULES, clock=clock, rand=lambda: 0.0)
    ticket = await gate.admit(DEST)
    assert isinstance(ticket, Ticket)
    await gate.finish(ticket, AttemptResult(status_code=200))
    return gate, clock


async def test_a_change_made_while_its_record_is_written_stays_to_write() -> None:
    """The write of a record took the destination off the dirty list even when a change
    came during it: that change was then never written, and lost once the destination
    left memory (helper-51's review)."""
    class SlowStore(MemoryDestinationStore):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def save(self, destination: Destination) -> Destination:
            await self.release.wait()
            return await super().save(destination)

    store = SlowStore()
    gate, clock = await with_statistics_to_flush(store)
    flushing = asyncio.create_task(gate.flush())
    await asyncio.sleep(0)  # the save waits
    clock.advance(5)
    second = await gate.admit(DEST)
    assert isinstance(second, Ticket)
    await gate.finish(second, AttemptResult(status_code=200))  # during the save
    store.release.set()
    await flushing
    assert gate.evict_idle(0.0) == 0  # still to write: kept
    await gate.flush()
    stored = await store.get(DEST)
    assert stored is not None
    assert stored.last_success_at == clock.now
    assert gate.evict_idle(0.0) == 1


async def test_a_flush_cancelled_while_its_save_lands_leaves_the_next_one_its_version() -> None:
    """Embedded, the gate is the records' one writer, but a save cancelled after it was
    sent (a stop that did not wait for the flush) still lands: the next flush, with the
    version before it, was refused (StaleWrite), and every destination after it in that
    flush was left unwritten (helper-74)."""
    class LandingStore(MemoryDestinationStore):
        """A save goes on when its caller stops waiting, as one in SQLite's batch does."""

        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()
            self.saves: list[asyncio.Task[Destination]] = []

        async def save(self, destination: Destination) -> Destination:
            async def landing() -> Destination:
                await self.release.wait()
                return await MemoryDestinationStore.save(self, destination)

            self.saves.append(asyncio.ensure_future(landing()))
            return await asyncio.shield(self.saves[-1])

    store = LandingStore()
    gate, clock = await with_statistics_to_flush(store)
    flushing = asyncio.create_task(gate.flush())
    await asyncio.sleep(0)
    flushing.cancel()  # the stop's cancel
    store.release.set()
    await asyncio.gather(*store.saves)  # landed: version 1
    await gate.flush()
    stored = await store.get(DEST)
    assert stored is not None
    assert stored.version == 2
    assert stored.last_success_at == clock.now
    assert gate.evict_idle(0.0) == 1  # written: nothing left to write
