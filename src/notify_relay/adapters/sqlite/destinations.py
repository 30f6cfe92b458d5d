"""DestinationStore on SQLite: one row per destination, beside the messages and the queue."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from notify_relay.adapters.codec import destination_from_doc, destination_to_doc
from notify_relay.adapters.paging import decode_cursor, encode_cursor
from notify_relay.adapters.sqlite import queries
from notify_relay.adapters.sqlite.database import SqliteDatabase
from notify_relay.domain.destination import BreakerState, Destination, DestinationKey
from notify_relay.domain.errors import InvalidCursor, StaleWrite
from notify_relay.ports import DestinationPage


def _from_row(row: tuple[Any, ...]) -> Destination:
    sender_id, name, version, doc = row
    return destination_from_doc(orjson.loads(doc) if doc is not None else None,
                                DestinationKey(sender_id, name), version)


class SqliteDestinationStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, key: DestinationKey) -> Destination | None:
        row = await self._db.read(lambda conn: conn.execute(
            queries.GET_DESTINATION, (key.sender_id, key.name)).fetchone())
        return _from_row(row) if row is not None else None

    async def save(self, destination: Destination) -> Destination:
        params = {"sender": destination.key.sender_id, "name": destination.key.name,
                  "state": destination.breaker.state.value, "expected": destination.version,
                  "doc": orjson.dumps(destination_to_doc(destination))}

        def save(conn: sqlite3.Connection) -> int:
            return conn.execute(queries.SAVE_DESTINATION, params).rowcount

        if await self._db.write(save) != 1:
            raise StaleWrite()
        return destination.with_version(destination.version + 1)

    async def list(
        self, sender_id: str, state: BreakerState | None, limit: int, cursor: str | None
    ) -> DestinationPage:
        after = decode_cursor(cursor) if cursor else ""
        if not isinstance(after, str):
            raise InvalidCursor()
        params = {"sender": sender_id, "after": after, "limit": limit + 1,
                  "state": state.value if state else None}
        sql = queries.LIST_DESTINATIONS_IN_STATE if state else queries.LIST_DESTINATIONS
        rows = await self._db.read(lambda conn: conn.execute(sql, params).fetchall())
        items = [_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return DestinationPage(items, encode_cursor(items[-1].key.name) if more else None)

    async def pending(self, key: DestinationKey) -> int:
        row = await self._db.read(lambda conn: conn.execute(
            queries.PENDING, (key.sender_id, key.name)).fetchone())
        return int(row[0]) if row is not None else 0

    async def active(self) -> Sequence[Destination]:
        rows = await self._db.read(
            lambda conn: conn.execute(queries.ACTIVE_DESTINATIONS).fetchall())
        return [_from_row(r) for r in rows]
