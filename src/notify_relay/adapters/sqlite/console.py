"""ConsoleReads on SQLite: the console's overviews, read on a connection of their own.

The connection is opened read-only (`mode=ro`, `query_only`): the console cannot write.
Its queries run in a worker thread, one at a time, so that a count over a large history
never holds up the event loop that serves the API and runs deliveries; in WAL mode they
see the last commit and never wait for a writer, nor make one wait.
"""
# ruff: noqa: S608 - the f-strings splice constant SQL fragments, never input

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from notify_relay.adapters.paging import decode_position, encode_cursor
from notify_relay.adapters.sqlite.database import BUSY_TIMEOUT_MS, SqliteDatabase
from notify_relay.adapters.sqlite.queries import MESSAGE_COLUMNS, NOT_A_NOTICE
from notify_relay.adapters.sqlite.store import readable_rows
from notify_relay.console.reads import MessageFilter, MinuteCount
from notify_relay.domain.errors import StoreUnavailable
from notify_relay.ports import Page

T = TypeVar("T")

COUNTS_BY_STATUS = f"""
SELECT status, count(*) FROM messages WHERE sender_id = ? AND {NOT_A_NOTICE} GROUP BY status
"""

# updated_at is RFC 3339 text in UTC: its first 16 characters name the minute
FINISHED_PER_MINUTE = f"""
SELECT substr(updated_at, 1, 16) AS minute, status, count(*) FROM messages
WHERE sender_id = ? AND status IN ('DELIVERED', 'FAILED') AND updated_at >= ?
  AND {NOT_A_NOTICE}
GROUP BY minute, status
"""

_CONDITIONS = {
    "status": "m.status = :status",
    "destination": "m.destination = :destination",
    # message ids are ASCII: every id that starts with the prefix sorts below prefix + DEL
    "prefix": "m.message_id >= :prefix AND m.message_id < :prefix || char(127)",
    "since": "m.{time}_at >= :since",
    "until": "m.{time}_at < :until",
    "before": "m.seq < :before",
}


def _stored_time(value: datetime) -> str:
    """A time as the store writes it (datetime.isoformat in UTC), to compare as text."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _list_query(params: Mapping[str, object], time_field: str) -> str:
    column = {"created": "created", "updated": "updated"}[time_field]
    conditions = ["m.sender_id = :sender", NOT_A_NOTICE]
    conditions += [sql.format(time=column) for name, sql in _CONDITIONS.items()
                   if params.get(name) is not None]
    return (f"SELECT {MESSAGE_COLUMNS}, NULL FROM messages m WHERE {' AND '.join(conditions)} "
            "ORDER BY m.seq DESC LIMIT :limit")


class SqliteConsoleReads:
    def __init__(self, database: SqliteDatabase) -> None:
        self._path = Path(database.path).resolve()
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(f"{self._path.as_uri()}?mode=ro", uri=True,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn = conn
        return self._conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:  # one connection: one query at a time
            try:
                return await asyncio.to_thread(lambda: fn(self._connection()))
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"the database cannot be read now: {exc}") from exc

    async def counts(self, sender_id: str) -> Mapping[str, int]:
        rows = await self._read(
            lambda conn: conn.execute(COUNTS_BY_STATUS, (sender_id,)).fetchall())
        return {status: count for status, count in rows}

    async def per_minute(self, sender_id: str, since: datetime) -> Sequence[MinuteCount]:
        rows = await self._read(lambda conn: conn.execute(
            FINISHED_PER_MINUTE, (sender_id, _stored_time(since))).fetchall())
        minutes: dict[str, dict[str, int]] = {}
        for minute, status, count in rows:
            minutes.setdefault(minute, {})[status] = count
        return [MinuteCount(datetime.fromisoformat(f"{minute}:00+00:00"),
                            delivered=by_status.get("DELIVERED", 0),
                            failed=by_status.get("FAILED", 0))
                for minute, by_status in sorted(minutes.items())]

    async def messages(self, sender_id: str, where: MessageFilter, limit: int,
                       cursor: str | None) -> Page:
        params: dict[str, Any] = {
            "sender": sender_id,
            "status": where.status.value if where.status else None,
            "destination": where.destination,
            "prefix": where.id_prefix or None,
            "since": _stored_time(where.since) if where.since else None,
            "until": _stored_time(where.until) if where.until else None,
            "before": decode_position(cursor),
            "limit": limit + 1,
        }
        sql = _list_query(params, where.time_field)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        more = len(rows) > limit
        rows = rows[:limit]
        # the rows are the store's own (its columns, no body): read them as it does
        return Page(readable_rows(rows), encode_cursor(rows[-1][0]) if more else None)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
