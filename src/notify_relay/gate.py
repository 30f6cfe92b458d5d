"""The gate in front of every attempt: per-destination admission, and what each result does
to its destination (breaker, Retry-After holds, adaptive concurrency, rate).

The rules are the domain's pure functions (domain/destination.py); this holds their state.
Two ways to hold it:
- embedded (`shared=False`): this process is the only one delivering from its database, so
  the state here is the truth. In-flight counts live in memory; a breaker's transitions
  and holds are written at once, its statistics every `flush()`.
- shared (`shared=True`, AWS): many workers, one record per destination in the store.
  Records are read through a cache of `cache_seconds`; every change that others must see
  (a failure, a transition, a probe, a rate step, a cut in concurrency) is a conditional
  write, re-applied on a fresh copy when another worker wrote first; in-flight slots are
  leases in a SlotLimiter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from notify_relay.clock import utcnow
from notify_relay.domain.destination import (
    Admission,
    Blocked,
    Breaker,
    BreakerState,
    Destination,
    DestinationKey,
    DestinationSettings,
    Rules,
    admission,
    breaker_probe_started,
    finished,
    probe_returned,
    started,
)
from notify_relay.domain.errors import StaleWrite, StoreUnavailable
from notify_relay.domain.retry import AttemptResult
from notify_relay.ports import DestinationStore, NullObserver, Observer, SlotLimiter

log = logging.getLogger("notify_relay.destinations")
SAVE_TRIES = 5
_DEFAULT_SETTINGS = DestinationSettings()
_CLOSED = Breaker()


class _Unset:
    """A setting the caller did not name."""


UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class Ticket:
    """Leave to make one attempt at a destination; `finish` or `cancel` gives it back."""

    key: DestinationKey
    probe: bool
    started_at: datetime
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """The destination cannot take the attempt now; try again at `until`."""

    reason: Blocked
    until: datetime


@dataclass(frozen=True, slots=True)
class DestinationView:
    destination: Destination
    in_flight: int
    pending: int
    default_concurrency: int
    now: datetime


@dataclass(frozen=True, slots=True)
class ViewPage:
    items: Sequence[DestinationView]
    next_cursor: str | None


def _with_statistics(fresh: Destination, local: Destination) -> Destination:
    """`fresh` with the later of each statistic, this process's or the store's."""
    if local.last_attempt_at is not None and (
            fresh.last_attempt_at is None or local.last_attempt_at > fresh.last_attempt_at):
        fresh = replace(fresh, last_attempt_at=local.last_attempt_at,
                        last_error=local.last_error or fresh.last_error)
    if local.last_success_at is not None and (
            fresh.last_success_at is None or local.last_success_at > fresh.last_success_at):
        fresh = replace(fresh, last_success_at=local.last_success_at)
    return fresh


def _probe_returned(dest: Destination) -> Destination:
    """A probe that is not in flight (not sent, or its process gone): OPEN, and another
    probe may go (domain probe_returned)."""
    breaker = probe_returned(dest.breaker)
    return dest if breaker is dest.breaker else replace(dest, breaker=breaker)


def _durable(old: Destination, new: Destination, shared: bool) -> bool:
    """Whether the change must be written now rather than with the next flush."""
    # by identity first: an attempt's result mostly leaves them the very same objects,
    # and a dataclass's == builds and compares tuples of their fields
    if (old.breaker is not new.breaker and old.breaker != new.breaker) \
            or old.held_until != new.held_until:
        return True
    if old.settings is not new.settings and old.settings != new.settings:
        return True
    if shared:  # the others apply the same limits
        return (_whole(old.concurrency) != _whole(new.concurrency)
                or old.rate_next_at != new.rate_next_at)
    return False


def _as_default(dest: Destination, now: datetime) -> bool:
    """Whether admission would treat `dest` as a destination never seen: its statistics
    and version aside, which are read again with it."""
    return (dest.settings == _DEFAULT_SETTINGS and dest.breaker == _CLOSED
            and dest.concurrency is None and (dest.held_until is None or dest.held_until <= now))


def _whole(concurrency: float | None) -> int | None:
    return None if concurrency is None else int(concurrency)


class Gate:
    def __init__(
        self,
        store: DestinationStore,
        rules: Rules | None = None,
        *,
        shared: bool = False,
        limiter: SlotLimiter | None = None,
        cache_seconds: float = 1.0,
        flush_seconds: float = 0.0,
        paused_seconds: float = 30.0,
        probe_seconds: float = 180.0,
        observer: Observer | None = None,
        on_ready: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`on_ready`: called when a destination may take more (the embedded worker's
        alarm)."""
        self.store = store
        self.rules = rules or Rules()
        self.observer: Observer = observer or NullObserver()
        self.on_ready: Callable[[], None] = on_ready or (lambda: None)
        self._shared = shared
        self._limiter = limiter
        self._cache_seconds = cache_seconds
        self._flush_seconds = flush_seconds
        self._paused_seconds = paused_seconds
        self._flushed_at: dict[DestinationKey, float] = {}
        self._probe_seconds = probe_seconds
        self._clock = clock
        self._rand = rand
        self._cache: dict[DestinationKey, tuple[Destination, float]] = {}
        self._in_flight: Counter[DestinationKey] = Counter()
        self._dirty: set[DestinationKey] = set()
        self._locks: dict[DestinationKey, asyncio.Lock] = {}

    # -- state ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Embedded: load what is not default, so that the cache is the whole truth.

        A half-open breaker's probe died with the process that sent it (its entry is
        released and retried like any interrupted attempt): the next probe may go at once.
        """
        if self._shared:
            return
        for dest in await self.store.active():
            self._remember(_probe_returned(dest))

    def _remember(self, dest: Destination) -> Destination:
        self._cache[dest.key] = (dest, time.monotonic())
        return dest

    def cached(self, key: DestinationKey) -> Destination:
        entry = self._cache.get(key)
        return entry[0] if entry is not None else Destination(key)

    async def current(self, key: DestinationKey) -> Destination:
        entry = self._cache.get(key)
        if entry is not None and (
            not self._shared or time.monotonic() - entry[1] < self._cache_seconds
        ):
            return entry[0]
        if entry is None and not self._shared:
            return Destination(key)
        return await self._reload(key)

    async def _reload(self, key: DestinationKey) -> Destination:
        """The stored record, with the statistics this process holds and has not written
        yet (a refresh must not drop them before the next flush)."""
        fresh = await self.store.get(key) or Destination(key)
        entry = self._cache.get(key)
        if entry is not None and key in self._dirty:
            fresh = _with_statistics(fresh, entry[0])
        return self._remember(fresh)

    async def _change(
        self, key: DestinationKey, change: Callable[[Destination], Destination],
        *, force: bool = False,
    ) -> tuple[Destination, Destination]:
        """Apply `change`; write it when others must see it, on a fresh copy if stale.

        Embedded, the change is in the cache at once, before any await: attempts that
        finish together each see the ones before (none is lost to a stale write), and the
        worker never claims on a state already overtaken. The write follows, one at a
        time per destination, of whatever the cache then holds.
        """
        if not self._shared:
            if key not in self._cache:  # evicted (evict_idle) or never seen: as stored
                stored = await self.store.get(key)
                if stored is not None and key not in self._cache:
                    self._remember(stored)
            old = self.cached(key)
            new = self._remember(change(old))
            if not force and not _durable(old, new, shared=False):
                self._dirty.add(key)
                return old, new
            try:
                await self._write_behind(key)
            except StoreUnavailable:
                if force:  # a setting the caller asked for is not in force unless stored
                    self._remember(replace(self.cached(key), settings=old.settings))
                    raise
                # the state in memory rules this process; the next flush writes it
                self._dirty.add(key)
                log.warning("writing a destination's state failed; it is kept in memory "
                            "and written again", extra={"destination": key.name})
            return old, new  # this change's own result, whatever followed during the write
        # Shared: one change at a time per destination in this process, so that a batch's
        # attempts ending together (100 records, 20 failing at one partner) do not race
        # each other's conditional writes; only another process's write can be stale.
        async with self._locks.setdefault(key, asyncio.Lock()):
            return await self._change_shared(key, change, force)

    async def _change_shared(
        self, key: DestinationKey, change: Callable[[Destination], Destination], force: bool,
    ) -> tuple[Destination, Destination]:
        old = await self.current(key)
        for _ in range(SAVE_TRIES):
            new = change(old)
            if not force and not _durable(old, new, self._shared):
                self._dirty.add(key)
                self._remember(new)
                return old, new
            try:
                saved = self._remember(await self.store.save(new))
                self._dirty.discard(key)
                return old, saved
            except StaleWrite:
                old = await self._reload(key)
        raise StaleWrite(f"destination {key.name} kept changing under this write")

    async def _write_behind(self, key: DestinationKey) -> None:
        """Write the cached record (embedded: the cache is the truth, this the only
        writer); a write that follows another one waits for it."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            written = self.cached(key)
            try:
                saved = await self.store.save(written)
            except StaleWrite:
                # a save of this one writer's, cancelled after it was sent (a stop that
                # did not wait for the flush), landed after all: the cache still rules
                stored = await self.store.get(key)
                if stored is None:
                    raise
                saved = await self.store.save(replace(written, version=stored.version))
            current = self.cached(key)
            if current is written:  # changed meanwhile: still to write (and not evicted)
                self._dirty.discard(key)
            # changes made meanwhile are in the cache: keep them, with the stored version
            self._remember(replace(current, version=saved.version))

    async def flush(self) -> None:
        """Write the statistics (last attempt, success, error) changed since the last flush,
        each destination at most once per `flush_seconds`."""
        now = time.monotonic()
        for key in list(self._dirty):
            if now - self._flushed_at.get(key, -1e9) < self._flush_seconds:
                continue
            self._flushed_at[key] = now
            if not self._shared:
                await self._write_behind(key)
                continue
            self._dirty.discard(key)
            try:
                self._remember(await self.store.save(self.cached(key)))
            except StaleWrite:
                self._cache.pop(key, None)  # another worker wrote: read it afresh next time

    def evict_idle(self, idle_seconds: float, limit: int = 5000) -> int:
        """Forget destinations untouched for `idle_seconds` whose record is written and says
        nothing the defaults do not: every destination ever used stayed in memory, about
        2 KiB each (9,000 one-off destinations: +19 MiB, found by helper-50). Embedded, the
        cache is the truth for the rest (a paused, open, held or cut destination stays); an
        evicted one is read again at its next change. At most `limit` a call (5,000: ~8 ms
        of the loop; the pass over the others ~15 ms for 100,000). Returns how many."""
        now, moment = self._clock(), time.monotonic()
        gone: list[DestinationKey] = []
        for key, (dest, at) in self._cache.items():
            if (moment - at >= idle_seconds and key not in self._dirty
                    and not self._in_flight.get(key) and self._unlocked(key)
                    and (self._shared or _as_default(dest, now))):
                gone.append(key)
                if len(gone) >= limit:
                    break
        for key in gone:
            del self._cache[key]
            self._locks.pop(key, None)
            self._flushed_at.pop(key, None)
        return len(gone)

    def _unlocked(self, key: DestinationKey) -> bool:
        lock = self._locks.get(key)
        return lock is None or not (lock.locked() or getattr(lock, "_waiters", None))

    # -- before and after an attempt ------------------------------------------------------

    def _admission(self, dest: Destination, now: datetime) -> Admission:
        return admission(dest, now, self._in_flight[dest.key], self.rules.default_concurrency)

    def count_by_state(self) -> Counter[str]:
        """Destinations this process knows, by breaker state (for the metrics)."""
        return Counter(dest.breaker.state.value for dest, _ in self._cache.values())

    def count_blocked(self) -> Counter[str]:
        """Destinations that cannot start an attempt now, by reason (for the metrics)."""
        now = self._clock()
        return Counter(a.blocked.value for dest, _ in self._cache.values()
                       if (a := self._admission(dest, now)).blocked is not None)

    def slots(self, key: DestinationKey) -> int:
        """Attempts the destination may start now, from what this process knows."""
        return self._admission(self.cached(key), self._clock()).slots

    def next_ready_at(self) -> datetime | None:
        """The earliest time a destination blocked until a known time opens again."""
        now = self._clock()
        times = [a.ready_at for dest, _ in self._cache.values()
                 if (a := self._admission(dest, now)).slots == 0 and a.ready_at is not None]
        return min(times, default=None)

    def _hold(self, reason: Blocked, until: datetime | None, now: datetime,
              dest: Destination) -> Hold:
        """When a held entry comes back. Embedded, the claim skips a blocked destination, so
        an entry held here is simply due again. Shared, it goes back to SQS with a delay:
        long enough not to cycle a backlog through the queue, spread so that a backlog
        does not return all at once, short while a probe decides."""
        self.observer.held(reason.value)
        if not self._shared:
            return Hold(reason, until or now)
        spread = self._rand()
        if reason is Blocked.PAUSED:
            until = now + timedelta(seconds=self._paused_seconds * (1.0 + spread))
        elif reason is Blocked.OPEN and dest.breaker.probe_until is not None:
            until = now + timedelta(seconds=1.0 + 4.0 * spread)  # the probe answers soon
        elif until is None:  # at its cap: a slot frees when an attempt ends
            until = now + timedelta(seconds=1.0 + 4.0 * spread)
        else:
            until += timedelta(seconds=spread * min(30.0, 0.1 * (until - now).total_seconds()))
        return Hold(reason, until)

    async def admit(self, key: DestinationKey) -> Ticket | Hold:
        now = self._clock()
        current = await self.current(key)
        verdict = self._admission(current, now)
        if verdict.slots <= 0:
            return self._hold(verdict.blocked or Blocked.AT_CAP, verdict.ready_at, now, current)
        took = False

        def start(dest: Destination) -> Destination:
            """Start on the freshest copy; another worker may have taken the turn."""
            nonlocal took
            fresh = self._admission(dest, now)
            took = fresh.slots > 0 and fresh.probe == verdict.probe
            return started(dest, now, probe=verdict.probe,
                           probe_seconds=self._probe_seconds) if took else dest

        try:
            _, dest = await self._change(key, start)
        except StaleWrite:
            took = False
            dest = self.cached(key)
        if not took:
            again = self._admission(dest, now)
            return self._hold(again.blocked or Blocked.AT_CAP, again.ready_at, now, dest)
        token = None
        if self._limiter is not None:
            token = await self._limiter.acquire(
                key, dest.current_concurrency(self.rules.default_concurrency),
                self._probe_seconds)
            if token is None:
                if verdict.probe:
                    await self._change(key, _probe_returned)
                return self._hold(Blocked.AT_CAP, None, now, dest)
        self._in_flight[key] += 1
        return Ticket(key, verdict.probe, now, token)

    async def _release(self, ticket: Ticket, *, judged: bool = False) -> bool:
        """Free the ticket's slot; True when the destination was at its cap before
        (`judged`: the caller has judged that itself, and False is returned)."""
        key = ticket.key
        in_flight = self._in_flight[key]
        was_full = not judged and in_flight >= self.cached(key).current_concurrency(
            self.rules.default_concurrency)
        if in_flight > 1:
            self._in_flight[key] = in_flight - 1
        else:
            del self._in_flight[key]
        if self._limiter is not None and ticket.token is not None:
            try:
                await self._limiter.release(ticket.key, ticket.token)
            except Exception:  # the lease ends by itself
                log.warning("releasing a destination slot failed",
                            extra={"destination": ticket.key.name}, exc_info=True)
        return was_full

    async def begin(self, ticket: Ticket) -> None:
        """The ticket's attempt is about to be sent: a probe turns the breaker HALF_OPEN
        (one probe in flight), not its admission, whose message may turn out final."""
        if not ticket.probe:
            return
        now = self._clock()

        def probing(dest: Destination) -> Destination:
            if dest.breaker.state is not BreakerState.OPEN:
                return dest
            return replace(dest, breaker=breaker_probe_started(dest.breaker, now,
                                                                self._probe_seconds))

        old, new = await self._change(ticket.key, probing)
        if old.breaker.state is not new.breaker.state:
            self._transition(ticket.key, old.breaker.state, new.breaker.state, new)

    async def cancel(self, ticket: Ticket) -> None:
        """The attempt did not happen: give the slot (and a probe's turn) back."""
        was_full = await self._release(ticket)
        if ticket.probe:  # HALF_OPEN when sent and then cut short (Relay.begin's await)
            old, new = await self._change(ticket.key, _probe_returned)
            if old.breaker.state is not new.breaker.state:
                self._transition(ticket.key, old.breaker.state, new.breaker.state, new)
        if was_full or ticket.probe:
            self.on_ready()

    async def finish(self, ticket: Ticket, result: AttemptResult) -> None:
        """Record what the attempt's result means for its destination, then free its slot:
        in that order, so that a slot is never taken again on a breaker about to open."""
        was_full = self._in_flight[ticket.key] >= self.cached(ticket.key).current_concurrency(
            self.rules.default_concurrency)
        now = self._clock()
        try:
            old, new = await self._change(ticket.key, lambda d: finished(
                d, result, started_at=ticket.started_at, now=now, probe=ticket.probe,
                rules=self.rules, rand=self._rand))
        finally:
            await self._release(ticket, judged=True)
        if old.breaker.state is not new.breaker.state:
            self._transition(ticket.key, old.breaker.state, new.breaker.state, new)
        if was_full or ticket.probe or new.breaker.state is not old.breaker.state:
            self.on_ready()

    def _transition(self, key: DestinationKey, old: BreakerState, new: BreakerState,
                    dest: Destination) -> None:
        self.observer.breaker_transition(old.value, new.value)
        message = {BreakerState.OPEN: "breaker opened", BreakerState.HALF_OPEN: "breaker probing",
                   BreakerState.CLOSED: "breaker closed"}[new]
        if old is BreakerState.HALF_OPEN and new is BreakerState.OPEN \
                and dest.breaker.probe_until is None and dest.breaker.next_probe_at is not None \
                and dest.breaker.next_probe_at <= self._clock():
            # not a failed probe (that opens it with a new cool-down): one with no verdict
            log.info("breaker probe gave no verdict: the next attempt probes", extra={
                "senderId": key.sender_id, "destination": key.name})
            return
        extra: dict[str, object] = {
            "senderId": key.sender_id, "destination": key.name, "from": old.value,
            "consecutiveFailures": dest.breaker.consecutive_failures,
            "lastError": dest.last_error}
        if new is BreakerState.OPEN:
            extra["nextProbeAt"] = dest.breaker.next_probe_at.isoformat() \
                if dest.breaker.next_probe_at else None
            log.warning(message, extra=extra)
        else:
            log.info(message, extra=extra)

    # -- what readers see -----------------------------------------------------------------

    async def expected_at(self, key: DestinationKey, due: datetime | None) -> datetime | None:
        """When a waiting message is expected to go: its own time, or later if its
        destination holds it; None while the destination is paused."""
        dest = await self.current(key)
        verdict = self._admission(dest, self._clock())
        if verdict.blocked is Blocked.PAUSED:
            return None
        if verdict.ready_at is not None and (due is None or verdict.ready_at > due):
            return verdict.ready_at
        return due

    async def view(self, dest: Destination) -> DestinationView:
        key = dest.key
        if self._limiter is not None:
            in_flight = await self._limiter.in_use(
                key, dest.cap(self.rules.default_concurrency))
        else:
            in_flight = self._in_flight[key]
        return DestinationView(dest, in_flight, await self.store.pending(key),
                               self.rules.default_concurrency, self._clock())

    async def list(
        self, sender_id: str, state: BreakerState | None, limit: int, cursor: str | None
    ) -> ViewPage:
        """The sender's destinations as the store lists them, with what only this process
        knows (embedded: statistics not yet flushed, in-flight counts)."""
        page = await self.store.list(sender_id, state, limit, cursor)
        items = [await self.view(self._fresher(dest)) for dest in page.items]
        return ViewPage(items, page.next_cursor)

    def _fresher(self, stored: Destination) -> Destination:
        if self._shared or stored.key not in self._cache:
            return stored
        return self.cached(stored.key)

    async def get(self, key: DestinationKey) -> Destination | None:
        stored = await self.store.get(key)
        if stored is None:
            return None
        if self._shared:
            return self._remember(stored)
        return self.cached(key) if key in self._cache else self._remember(stored)

    async def configure(
        self, key: DestinationKey, *, paused: bool | None = None,
        max_concurrency: int | _Unset | None = UNSET,
        rate_per_second: float | _Unset | None = UNSET,
    ) -> Destination:
        """Change a destination's settings (UNSET: leave as is) and return it. Always
        written: a PATCH of a name not used yet makes it listed."""

        def change(dest: Destination) -> Destination:
            settings = dest.settings
            if paused is not None:
                settings = replace(settings, paused=paused)
            if not isinstance(max_concurrency, _Unset):
                settings = replace(settings, max_concurrency=max_concurrency)
            if not isinstance(rate_per_second, _Unset):
                settings = replace(settings, rate_per_second=rate_per_second)
            return dest.with_settings(settings)

        if self._shared:  # embedded, _change reads a destination it does not hold
            await self._reload(key)
        _, dest = await self._change(key, change, force=True)
        log.info("destination settings changed", extra={
            "senderId": key.sender_id, "destination": key.name,
            "paused": dest.settings.paused, "maxConcurrency": dest.settings.max_concurrency,
            "ratePerSecond": dest.settings.rate_per_second})
        self.on_ready()
        return dest
