"""An asyncio loop that claims due entries and delivers them with bounded concurrency.

Claims are destination-aware: a destination that is paused, open, held, rate limited or at
its cap is skipped, so its backlog never takes a delivery slot, and destinations with work
are served in turn. Each claimed entry gets its destination's leave (a Ticket) before the
next claim, so that the next one sees the slots taken.

It sleeps until the earliest entry that may start is due (or a blocked destination opens),
and wakes at once when new work is queued or a destination can take more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from notify_relay.domain.destination import DestinationKey
from notify_relay.domain.errors import StoreUnavailable
from notify_relay.gate import Ticket
from notify_relay.ports import Claim, StartingQueue, WorkQueue
from notify_relay.service import OutcomeNotRecorded, Relay
from notify_relay.worker.wakeup import WakeUp

log = logging.getLogger("notify_relay.worker")

MAIN_STOP_SECONDS = 5.0  # a claim waits at most about a second for the write turn
# an entry whose destination could not be asked (a fault, not a verdict) returns this much
# later: at once, a fault that lasts took the same entries round in a loop, hundreds a second
ADMIT_FAULT_DELAY_SECONDS = 1.0
RELEASE_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 30.0, 30.0)
# An attempt in flight this long stops counting against the pool (`concurrency`), up to as
# many again as the pool. Mostly it waits for its partner's answer, which costs no CPU (its
# clock starts with its task, so a slow store write counts too); and partners that
# hang, each within its own cap, filled the pool and held every other destination until
# their timeouts (four at 64 each, with the default 256: 28 s). Looked at every
# WAITING_CHECK_SECONDS while the pool is full.
WAITING_AFTER_SECONDS = 1.0
WAITING_CHECK_SECONDS = 0.25
# Bodies (up to 6 MiB each) are read by the claim and held by their attempts: without a
# bound, one claim of 64 read 384 MiB on the event loop (276 ms) and the attempts in flight
# could hold 512 of them, 3 GiB. A claim reads up to CLAIM_BODY_BYTES, stopping before a
# body that would take it past (each row gives its body's size before its body is read;
# counted with its message's document, whose headers only the request's size bounds, as
# an attempt in flight counts the headers it holds with its body),
# unless that body is its first; and none starts while BODY_BYTES_IN_FLIGHT are held. So a
# claim reads at most 4 MiB or its first body (a request has up to 6 MiB; its body as sent
# may be more, json.dumps writing 1e15 as 1000000000000000.0), a few ms of the loop (4 MiB
# of 512 KiB bodies: 4-6 ms on a slow day of this project's 2-core machine, about what a
# claim of 64 small ones costs), where a bound of 32 MiB that the last body could pass held
# it 42-45 ms. Each claim waits for its commit, so fewer bodies a claim is slower where
# fsync is slow: with 5 ms more a commit, 1 MiB delivered bodies of 100-512 KiB 1.5-3x
# slower than 32 MiB, 4 MiB those of 512 KiB 500-584/s against 591-710 (100 KiB: the same),
# and 6 MiB as fast as 32 but a claim of 100 KiB bodies held the loop 12 ms against 5.6. The
# bound is shared as the pool is: the bodies of attempts set aside as waiting stop counting,
# up to as much again, and one destination's bodies in flight, waiting or not, take at most
# its cap's share of the bound (the default 64 of 256: 128 MiB); so partners that hang on
# big bodies hold back the others only when as many hang as would fill the pool (eight).
# With the first rule alone, three such partners held 1,152 MiB and every other destination
# waited for their timeouts.
CLAIM_BODY_BYTES = 4 * 1024 * 1024
BODY_BYTES_IN_FLIGHT = 512 * 1024 * 1024


def most_in_flight(concurrency: int) -> int:
    """Attempts in flight at most: the pool, and as many again waiting (the connections
    the delivery client may hold)."""
    return 2 * concurrency


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 256
    claim_batch: int = 64
    lease_seconds: float = 180.0
    max_idle_seconds: float = 5.0
    reconcile_every_seconds: float = 30.0
    flush_every_seconds: float = 1.0
    # a destination untouched this long, in its default state, leaves memory (Gate.evict_idle);
    # looked for this often (a pass reads every destination held: ~10 ms for 100,000)
    idle_destination_seconds: float = 600.0
    evict_every_seconds: float = 60.0
    shutdown_grace_seconds: float = 10.0
    claim_linger_seconds: float = 0.002
    claim_body_bytes: int = CLAIM_BODY_BYTES
    body_bytes_in_flight: int = BODY_BYTES_IN_FLIGHT


class Worker:
    def __init__(self, relay: Relay, queue: WorkQueue, settings: WorkerSettings,
                 wakeup: WakeUp) -> None:
        """`wakeup`: the alarm the Relay and the Gate ring (see bootstrap)."""
        self._relay = relay
        self._gate = relay.gate
        self._queue = queue
        self._starting = queue if isinstance(queue, StartingQueue) else None
        self._settings = settings
        self._wake = wakeup
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._hurried = asyncio.Event()  # a second stop signal: the grace is over
        self._inflight: set[asyncio.Task[None]] = set()
        # what each attempt works on, and when it began (in that order)
        self._claims: dict[asyncio.Task[None], tuple[Claim, float]] = {}
        self._waiting: set[asyncio.Task[None]] = set()  # long in flight: out of the pool
        self._body_bytes = 0  # of the claims in flight that started with their message
        self._waiting_bytes = 0  # of those, the waiting ones'
        self._bytes_of: dict[DestinationKey, int] = {}  # the same by destination
        self._releases: set[asyncio.Task[None]] = set()  # leases given back after a fault
        self._main: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._refill = max(1, min(settings.claim_batch, settings.concurrency // 4))

    async def check_alive(self) -> None:
        """Readiness: the claiming loop runs (it logs and carries on after any error)."""
        if self._main is None or self._main.done():
            raise RuntimeError("the delivery worker is not running")

    async def start(self) -> None:
        await self._gate.start()
        recovered = await self._queue.recover()
        if recovered:
            log.warning("released leases left by an earlier process", extra={"count": recovered})
        await self._relay.reconcile(older_than=timedelta(0))
        self._main = asyncio.create_task(self._run(), name="worker")
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name="reconciler")
        self._flusher = asyncio.create_task(self._flush_forever(), name="destination-flush")

    async def stop(self) -> None:
        """Stop claiming, let attempts in flight finish within the grace, then abandon them.

        An abandoned attempt is recorded as cut short by the stop and its entry is due again
        (Relay._cut_short); if that write fails, it keeps its lease and status DELIVERING,
        and the next start releases the lease and records it as interrupted. Either way
        nothing is lost.
        """
        self._stopping.set()
        self._wake.ready()
        self._slot_free.set()
        # a claim under way ends, and gives back what it took; a flush under way ends too:
        # cancelled, its write still landed, and the last flush (below) wrote over it with
        # the version before it (StaleWrite, a traceback at every such stop)
        if running := [task for task in (self._main, self._flusher) if task is not None]:
            await asyncio.wait(running, timeout=MAIN_STOP_SECONDS)
        for task in (self._main, self._reconciler, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._inflight:
            log.info("stopping: waiting for the attempts in flight", extra={
                "count": len(self._inflight),
                "graceSeconds": self._settings.shutdown_grace_seconds})
            pending = await self._within_grace()
            abandoned = [started[0] for task in pending if (started := self._claims.get(task))]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("abandoned attempts at shutdown", extra={"count": len(pending)})
            for claim in abandoned:  # each is sent again after the next start, uncounted
                # every line of a message's life carries its correlation id (helper-50)
                cid = claim.correlation_id or (
                    claim.started.before.correlation_id if claim.started else None)
                log.warning("abandoned an attempt at shutdown", extra={
                    "messageId": claim.key.message_id, "senderId": claim.key.sender_id,
                    "destination": claim.destination, "correlationId": cid})
        for task in list(self._releases):  # the next start's recover() releases those leases
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._gate.flush()
        except Exception:
            log.exception("writing destination statistics at shutdown failed")

    def hurry(self) -> None:
        """A second stop signal: the attempts in flight are abandoned now, not at the end
        of the grace."""
        self._hurried.set()

    async def _within_grace(self) -> set[asyncio.Task[None]]:
        """The attempts still in flight when the grace ends, or when hurried."""
        attempts = set(self._inflight)
        finished = asyncio.create_task(asyncio.wait(attempts))  # its cancel leaves them be
        hurried = asyncio.create_task(self._hurried.wait())
        try:
            await asyncio.wait([finished, hurried], timeout=self._settings.shutdown_grace_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            hurried.cancel()
        return {task for task in attempts if not task.done()}

    async def _run(self) -> None:
        settings = self._settings
        while not self._stopping.is_set():
            free = self._free()
            if (free < self._refill or self._body_room() <= 0) and self._inflight:
                # claim in batches: one claim per freed slot would be one write per attempt
                self._slot_free.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAITING_CHECK_SECONDS):
                        await self._slot_free.wait()
                self._set_aside_waiting()
                continue
            wanted = min(free, settings.claim_batch)
            self._wake.clear()
            try:
                if self._starting is not None:  # one write fewer an attempt
                    claims = await self._starting.claim_started(
                        wanted, settings.lease_seconds, self._slots,
                        self._relay.start_claimed,
                        min(settings.claim_body_bytes, self._body_room()), self._room_of)
                else:
                    claims = await self._queue.claim(wanted, settings.lease_seconds,
                                                     self._gate.slots)
            except StoreUnavailable as exc:  # a full disk, a lock held: named, no traceback
                log.warning("claiming work failed; trying again shortly",
                            extra={"error": exc.message})
                await self._sleep(1.0)
                continue
            except Exception:
                log.exception("claiming work failed; trying again shortly")
                await self._sleep(1.0)
                continue
            if self._stopping.is_set():  # stopped while claiming: not started after all
                await self._give_back(claims)
                return
            for claim in claims:
                ticket = None
                destination = claim.destination_key
                if destination is not None:
                    try:
                        ticket = await self._relay.admit(claim, destination)
                    except Exception:
                        log.exception("asking the destination failed; the entry returns "
                                      "shortly", extra={"destination": destination.name})
                        self._release_later(claim, ADMIT_FAULT_DELAY_SECONDS)
                        continue
                    if ticket is None:  # held back: rescheduled without an attempt
                        continue
                task = asyncio.create_task(self._deliver(claim, ticket))
                size = _body_size(claim)
                self._body_bytes += size
                if destination is not None and size:
                    self._bytes_of[destination] = self._bytes_of.get(destination, 0) + size
                self._inflight.add(task)
                self._claims[task] = (claim, time.monotonic())
                task.add_done_callback(self._done)
            if len(claims) < wanted and await self._sleep(await self._idle_time()):
                # woken by new work: let a burst gather so that one claim takes it all
                await asyncio.sleep(settings.claim_linger_seconds)

    async def _give_back(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            try:
                await self._relay.release(claim)
            except Exception:  # its lease ends, and the next start takes it up
                log.exception("giving back a claim at shutdown failed",
                              extra={"messageId": claim.key.message_id,
                                     "senderId": claim.key.sender_id})

    def _free(self) -> int:
        """Room in the pool: attempts in flight, less those long waiting for an answer."""
        return self._settings.concurrency - len(self._inflight) + len(self._waiting)

    def _set_aside_waiting(self) -> None:
        """Take the attempts in flight for WAITING_AFTER_SECONDS out of the pool, oldest
        first, while the waiting ones are fewer than the pool."""
        room = self._settings.concurrency - len(self._waiting)
        cutoff = time.monotonic() - WAITING_AFTER_SECONDS
        for task, (claim, since) in self._claims.items():
            if room <= 0 or since > cutoff:
                return
            if task not in self._waiting:
                self._waiting.add(task)
                self._waiting_bytes += _body_size(claim)
                room -= 1

    def _body_room(self) -> int:
        """Room for bodies: the bound, less those held, of which the waiting ones count
        only past the bound (see BODY_BYTES_IN_FLIGHT)."""
        bound = self._settings.body_bytes_in_flight
        return bound - self._body_bytes + min(self._waiting_bytes, bound)

    def _share(self, key: DestinationKey) -> int:
        """The most of the bound one destination's bodies in flight may hold: its cap's
        share of the pool (see BODY_BYTES_IN_FLIGHT), a cap set by PATCH included."""
        settings = self._settings
        cap = self._gate.cached(key).cap(self._gate.rules.default_concurrency)
        return settings.body_bytes_in_flight * min(cap, settings.concurrency) \
            // settings.concurrency

    def _room_of(self, key: DestinationKey) -> int:
        return self._share(key) - self._bytes_of.get(key, 0)

    def _slots(self, key: DestinationKey) -> int:
        """The gate's slots, none for a destination whose bodies fill its share."""
        return self._gate.slots(key) if self._room_of(key) > 0 else 0

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if (started := self._claims.pop(task, None)) is not None:
            claim = started[0]
            size = _body_size(claim)
            self._body_bytes -= size
            if task in self._waiting:
                self._waiting_bytes -= size
            if (key := claim.destination_key) is not None and size:
                held = self._bytes_of[key] - size
                if held > 0:
                    self._bytes_of[key] = held
                else:
                    del self._bytes_of[key]
                if held < self._share(key) <= held + size:  # it may take more: claim again
                    self._wake.ready()
        self._waiting.discard(task)
        if self._free() >= self._refill and self._body_room() > 0:
            self._slot_free.set()

    async def _deliver(self, claim: Claim, ticket: Ticket | None) -> None:
        try:
            await self._relay.deliver(claim, ticket)
        except OutcomeNotRecorded:  # sent: the lease's end spaces a second request
            log.exception("an attempt's outcome could not be recorded; the entry returns "
                          "when its lease ends", extra={"messageId": claim.key.message_id,
                                                        "senderId": claim.key.sender_id})
        except Exception:
            log.exception("delivery failed; the entry returns shortly",
                          extra={"messageId": claim.key.message_id,
                                 "senderId": claim.key.sender_id})
            self._release_later(claim)

    def _release_later(self, claim: Claim, after: float = 0.0) -> None:
        # the lease is all a release needs: its tries may last as long as the lease (180 s),
        # and the body it started with (up to 6 MiB) no longer counts against the bound
        task = asyncio.create_task(self._release(replace(claim, started=None), after))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, claim: Claim, after: float) -> None:
        """Give back the lease of an entry whose step failed (most often a store briefly
        unwritable), so that it is tried again in seconds, not when its lease ends; due
        `after` seconds on.

        The release is itself a write: it is tried again with backoff for as long as the
        lease would last. Whatever it does not manage, the lease's end still does.
        """
        deadline = time.monotonic() + self._settings.lease_seconds
        for delay in RELEASE_DELAYS:
            try:
                # the backoff spaces the tries, never delays a released entry
                await self._queue.reschedule(claim, datetime.now(UTC) + timedelta(seconds=after))
            except Exception as exc:
                log.warning("releasing an entry failed; trying again", extra={
                    "messageId": claim.key.message_id, "senderId": claim.key.sender_id,
                    "error": f"{type(exc).__name__}: {exc}"[:200]})
            else:
                self._wake.ready()
                return
            if time.monotonic() + delay >= deadline or self._stopping.is_set():
                return
            await asyncio.sleep(delay)

    async def _idle_time(self) -> float:
        times = [t for t in (await self._queue.next_due(self._slots),
                             self._gate.next_ready_at()) if t is not None]
        next_due = min(times, default=None)
        if next_due is None:
            return self._settings.max_idle_seconds
        wait = (next_due - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.0), self._settings.max_idle_seconds)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when woken early by new work."""
        return await self._wake.sleep(seconds)

    async def _flush_forever(self) -> None:
        """Until the stop, which it waits for between flushes (stop() flushes once more)."""
        settings = self._settings
        evicted_at = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.flush_every_seconds):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            try:
                if time.monotonic() - evicted_at >= settings.evict_every_seconds:
                    evicted_at = time.monotonic()
                    if forgotten := self._gate.evict_idle(settings.idle_destination_seconds):
                        log.debug("forgot idle destinations", extra={"destinations": forgotten})
                await self._gate.flush()
            except StoreUnavailable as exc:  # each second while the disk is full: no traceback
                log.warning("writing destination statistics failed", extra={"error": exc.message})
            except Exception:
                log.exception("writing destination statistics failed")

    async def _reconcile_forever(self) -> None:
        interval = self._settings.reconcile_every_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self._relay.reconcile(older_than=timedelta(seconds=interval))
            except Exception:
                log.exception("reconciling stored but unqueued messages failed")


def _body_size(claim: Claim) -> int:
    """What an attempt holds of the message its claim started (none when it did not): its
    body, and its headers, which only the request's size bounds (the claim counted them in
    the message's document)."""
    if claim.started is None:
        return 0
    content = claim.started.after.content
    return len(content.body or b"") + sum(len(k) + len(v) for k, v in content.headers)
