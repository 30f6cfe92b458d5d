"""WorkQueue on SQLite: a visibility time per entry, as SQS has, with receipts for leases."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from notify_relay.adapters.sqlite import queries
from notify_relay.adapters.sqlite.database import SqliteDatabase
from notify_relay.clock import utcnow
from notify_relay.domain.message import MessageKey
from notify_relay.ports import Claim


def _execute(sql: str, params: tuple[object, ...]) -> Callable[[sqlite3.Connection], int]:
    return lambda conn: conn.execute(sql, params).rowcount


class SqliteQueue:
    def __init__(self, db: SqliteDatabase, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None
    ) -> None:
        params = (key.sender_id, key.message_id, due_at.timestamp())
        await self._db.write(_execute(queries.ENQUEUE, params))

    async def claim(self, limit: int, lease_seconds: float) -> Sequence[Claim]:
        now = self._clock()
        lease_until = now + timedelta(seconds=lease_seconds)

        def claim(conn: sqlite3.Connection) -> list[Claim]:
            due = conn.execute(queries.DUE_ENTRIES, (now.timestamp(), limit)).fetchall()
            claims = [Claim(MessageKey(s, m), secrets.token_hex(8), lease_until)
                      for _, s, m in due]
            conn.executemany(queries.LEASE, [(lease_until.timestamp(), c.receipt, rowid)
                                             for (rowid, _, _), c in zip(due, claims, strict=True)])
            return claims

        return await self._db.write(claim)

    async def complete(self, claim: Claim) -> None:
        params = (claim.key.sender_id, claim.key.message_id, claim.receipt)
        await self._db.write(_execute(queries.COMPLETE, params))

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        params = (due_at.timestamp(), claim.key.sender_id, claim.key.message_id, claim.receipt)
        await self._db.write(_execute(queries.RESCHEDULE, params))

    async def dead_letter(self, claim: Claim) -> None:
        await self.complete(claim)

    async def next_due(self) -> datetime | None:
        row = await self._db.read(lambda conn: conn.execute(queries.NEXT_DUE).fetchone())
        return datetime.fromtimestamp(row[0], UTC) if row and row[0] is not None else None

    async def recover(self) -> int:
        now = self._clock().timestamp()
        return await self._db.write(_execute(queries.RECOVER, (now,)))

    async def depth(self) -> int:
        row = await self._db.read(lambda conn: conn.execute(queries.DEPTH).fetchone())
        return int(row[0])

    async def ping(self) -> None:
        await self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())
