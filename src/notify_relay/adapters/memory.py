"""In-memory adapters of every port: the fakes behind unit tests, held to the same contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from notify_relay.adapters.paging import decode_cursor, decode_position, encode_cursor
from notify_relay.adapters.turns import RoundRobin
from notify_relay.clock import utcnow
from notify_relay.domain.callback import is_notice
from notify_relay.domain.destination import (
    BreakerState,
    Destination,
    DestinationKey,
    fair_shares,
)
from notify_relay.domain.errors import InvalidCursor, StaleWrite
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.status import Status
from notify_relay.ports import Claim, DestinationPage, Entry, Page, Slots


class MemoryStore:
    def __init__(self) -> None:
        self._rows: dict[MessageKey, tuple[int, Message]] = {}
        self._seq = 0
        self.destinations = MemoryDestinationStore(self)

    async def create(self, message: Message) -> tuple[Message, bool]:
        existing = self._rows.get(message.key)
        if existing is not None:
            return existing[1], False
        self.destinations.seen.add(message.destination_key)
        self._seq += 1
        stored = message.with_version(1)
        self._rows[message.key] = (self._seq, stored)
        return stored, True

    async def get(self, key: MessageKey, *, with_body: bool = True) -> Message | None:
        row = self._rows.get(key)
        return row[1] if row else None

    async def update(self, message: Message) -> Message:
        row = self._rows.get(message.key)
        if row is None or row[1].version != message.version:
            raise StaleWrite()
        stored = message.with_version(message.version + 1)
        self._rows[message.key] = (row[0], stored)
        return stored

    async def list(
        self, sender_id: str, status: Status | None, limit: int, cursor: str | None
    ) -> Page:
        before = decode_position(cursor)
        rows = sorted(
            (
                (seq, m)
                for seq, m in self._rows.values()
                if m.key.sender_id == sender_id and not is_notice(m.key)
                and (status is None or m.status is status)
                and (before is None or seq < before)
            ),
            key=lambda r: r[0],
            reverse=True,
        )
        page = rows[:limit]
        more = len(rows) > limit
        return Page([m for _, m in page], encode_cursor(page[-1][0]) if more else None)

    async def failed_between(
        self, sender_id: str, destination: str | None, since: datetime, until: datetime,
        limit: int,
    ) -> Sequence[Message]:
        found = sorted(
            (m for _, m in self._rows.values()
             if m.key.sender_id == sender_id and m.status is Status.FAILED
             and not is_notice(m.key)
             and (destination is None or m.destination == destination)
             and since <= m.updated_at < until),
            key=lambda m: m.updated_at)
        return found[:limit]

    async def expire(self, changed_before: datetime, limit: int) -> int:
        old = sorted((m.updated_at, key) for key, (_, m) in self._rows.items()
                     if m.status.is_final and m.updated_at < changed_before)[:limit]
        for _, key in old:
            del self._rows[key]
        return len(old)

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        found = [
            m
            for _, m in self._rows.values()
            if m.status is Status.QUEUED and not m.queued and m.created_at < created_before
        ]
        return found[:limit]

    async def ping(self) -> None:
        return None


class MemoryDestinationStore:
    def __init__(self, messages: MemoryStore | None = None) -> None:
        self._messages = messages
        self._records: dict[DestinationKey, Destination] = {}
        self.seen: set[DestinationKey] = set()

    async def get(self, key: DestinationKey) -> Destination | None:
        if key in self._records:
            return self._records[key]
        return Destination(key) if key in self.seen else None

    async def save(self, destination: Destination) -> Destination:
        current = self._records.get(destination.key)
        if (current.version if current else 0) != destination.version:
            raise StaleWrite()
        saved = replace(destination, version=destination.version + 1)
        self._records[destination.key] = saved
        return saved

    async def list(
        self, sender_id: str, state: BreakerState | None, limit: int, cursor: str | None
    ) -> DestinationPage:
        after = decode_cursor(cursor) if cursor else None
        if after is not None and not isinstance(after, str):
            raise InvalidCursor()
        keys = sorted(k for k in self.seen | self._records.keys()
                      if k.sender_id == sender_id and (after is None or k.name > after))
        found = [d for k in keys if (d := self._records.get(k, Destination(k)))
                 and (state is None or d.breaker.state is state)]
        page = found[:limit]
        more = len(found) > limit
        return DestinationPage(page, encode_cursor(page[-1].key.name) if more else None)

    async def pending(self, key: DestinationKey) -> int:
        if self._messages is None:
            return 0
        return sum(1 for _, m in self._messages._rows.values()
                   if m.destination_key == key and not m.status.is_final)

    async def active(self) -> Sequence[Destination]:
        return list(self._records.values())


@dataclass(slots=True)
class _Entry:
    due: datetime
    receipt: str | None
    destination: str


class MemoryQueue:
    exclusive_claims = True

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._entries: dict[MessageKey, _Entry] = {}
        self._turns = RoundRobin()

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None,
        destination: str = "",
    ) -> None:
        entry = self._entries.setdefault(key, _Entry(due_at, None, destination))
        if entry.receipt is None and due_at < entry.due:
            entry.due = due_at

    async def enqueue_many(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            await self.enqueue(e.key, e.due_at, e.correlation_id, e.destination)

    def _lease(self, key: MessageKey, now: datetime, lease_seconds: float) -> Claim:
        entry = self._entries[key]
        entry.receipt = uuid.uuid4().hex
        entry.due = now + timedelta(seconds=lease_seconds)
        return Claim(key, entry.receipt, entry.due, entry.destination)

    async def claim(
        self, limit: int, lease_seconds: float, slots: Slots | None = None
    ) -> Sequence[Claim]:
        now = self._clock()
        due = sorted((e.due, key) for key, e in self._entries.items() if e.due <= now)
        if slots is None:
            return [self._lease(key, now, lease_seconds) for _, key in due[:limit]]
        by_destination: dict[DestinationKey, list[MessageKey]] = {}
        for _, key in due:
            dest = DestinationKey(key.sender_id, self._entries[key].destination)
            by_destination.setdefault(dest, []).append(key)
        ready = [(d, min(n, len(keys))) for d, keys in by_destination.items()
                 if (n := slots(d)) > 0]
        shares = fair_shares(self._turns.order(ready), limit)
        self._turns.served(shares)
        return [self._lease(key, now, lease_seconds)
                for dest, share in shares.items() for key in by_destination[dest][:share]]

    def _entry_of(self, claim: Claim) -> _Entry | None:
        entry = self._entries.get(claim.key)
        return entry if entry is not None and entry.receipt == claim.receipt else None

    async def complete(self, claim: Claim) -> None:
        if self._entry_of(claim) is not None:
            del self._entries[claim.key]

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        entry = self._entry_of(claim)
        if entry is not None:
            entry.due, entry.receipt = due_at, None

    async def dead_letter(self, claim: Claim) -> None:
        await self.complete(claim)

    async def next_due(self, slots: Slots | None = None) -> datetime | None:
        return min((e.due for key, e in self._entries.items()
                    if slots is None or slots(DestinationKey(key.sender_id, e.destination)) > 0),
                   default=None)

    async def recover(self) -> int:
        now = self._clock()
        leased = [e for e in self._entries.values() if e.receipt is not None]
        for entry in leased:
            entry.due, entry.receipt = now, None
        return len(leased)

    async def depth(self) -> int:
        return len(self._entries)

    async def ping(self) -> None:
        return None
