"""In-memory adapters of every port: the fakes behind unit tests, held to the same contract."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from notify_relay.adapters.paging import decode_position, encode_cursor
from notify_relay.clock import utcnow
from notify_relay.domain.errors import StaleWrite
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.status import Status
from notify_relay.ports import Claim, Page


class MemoryStore:
    def __init__(self) -> None:
        self._rows: dict[MessageKey, tuple[int, Message]] = {}
        self._seq = 0

    async def create(self, message: Message) -> tuple[Message, bool]:
        existing = self._rows.get(message.key)
        if existing is not None:
            return existing[1], False
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
                if m.key.sender_id == sender_id
                and (status is None or m.status is status)
                and (before is None or seq < before)
            ),
            key=lambda r: r[0],
            reverse=True,
        )
        page = rows[:limit]
        more = len(rows) > limit
        return Page([m for _, m in page], encode_cursor(page[-1][0]) if more else None)

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        found = [
            m
            for _, m in self._rows.values()
            if m.status is Status.QUEUED and not m.queued and m.created_at < created_before
        ]
        return found[:limit]

    async def ping(self) -> None:
        return None


class MemoryQueue:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self._clock = clock
        self._entries: dict[MessageKey, tuple[datetime, str | None]] = {}

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None
    ) -> None:
        self._entries.setdefault(key, (due_at, None))

    async def claim(self, limit: int, lease_seconds: float) -> Sequence[Claim]:
        now = self._clock()
        due = sorted((when, key) for key, (when, _) in self._entries.items() if when <= now)
        claims: list[Claim] = []
        for _, key in due[:limit]:
            receipt = uuid.uuid4().hex
            lease_until = now + timedelta(seconds=lease_seconds)
            self._entries[key] = (lease_until, receipt)
            claims.append(Claim(key, receipt, lease_until))
        return claims

    async def complete(self, claim: Claim) -> None:
        entry = self._entries.get(claim.key)
        if entry is not None and entry[1] == claim.receipt:
            del self._entries[claim.key]

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        entry = self._entries.get(claim.key)
        if entry is not None and entry[1] == claim.receipt:
            self._entries[claim.key] = (due_at, None)

    async def dead_letter(self, claim: Claim) -> None:
        await self.complete(claim)

    async def next_due(self) -> datetime | None:
        return min((when for when, _ in self._entries.values()), default=None)

    async def recover(self) -> int:
        now = self._clock()
        leased = [key for key, (_, receipt) in self._entries.items() if receipt is not None]
        for key in leased:
            self._entries[key] = (now, None)
        return len(leased)

    async def depth(self) -> int:
        return len(self._entries)

    async def ping(self) -> None:
        return None
