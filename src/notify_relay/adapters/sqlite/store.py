"""MessageStore on SQLite."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from notify_relay.adapters.codec import message_from_doc, message_to_doc
from notify_relay.adapters.paging import decode_position, encode_cursor
from notify_relay.adapters.sqlite import queries
from notify_relay.adapters.sqlite.database import SqliteDatabase
from notify_relay.domain.errors import CorruptRecord, StaleWrite
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.status import Status
from notify_relay.ports import Claim, Page

log = logging.getLogger("notify_relay.sqlite")
END = 2**63 - 1  # above every seq: the first page's `before`
EXPIRE_BYTES = 4 * 1024 * 1024  # bodies freed by one expire(): about 8 ms of the writer
# a write of more bytes than this (doc and body: headers are bounded only by the request's
# 6 MiB) takes a savepoint of its own, not one shared with the replayable writes beside it,
# which holds a copy of every page they all change until its end (32 updates of a 2 MB doc
# each held 126 MiB, against 68 one at a time; helper-68)
REPLAYABLE_BYTES = queries.INLINE_BODY_BYTES


def message_from_row(row: tuple[Any, ...]) -> Message:
    """The message of a row; CorruptRecord when the row cannot be read (a damaged file,
    a hand edit), named for what it is rather than as a KeyError deep in a request."""
    try:
        return _decode(row)
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # orjson's errors included
        raise CorruptRecord(f"message {row[2]!r} of sender {row[1]!r} cannot be read: "
                            f"{type(exc).__name__}: {exc}") from exc


def _decode(row: tuple[Any, ...]) -> Message:
    _, sender_id, message_id, status, fingerprint, created, updated, queued, version, doc, body = (
        row
    )
    return message_from_doc(
        orjson.loads(doc),
        key=MessageKey(sender_id, message_id),
        status=status,
        fingerprint=fingerprint,
        created_at=created,
        updated_at=updated,
        queued=bool(queued),
        version=version,
        body=body,
    )


def update_params(message: Message) -> tuple[object, ...]:
    """UPDATE_MESSAGE's parameters: `message` written over the version it carries."""
    return (message.status.value, message.updated_at.isoformat(), int(message.queued),
            orjson.dumps(message_to_doc(message)), message.key.sender_id,
            message.key.message_id, message.version)


def readable_rows(rows: list[tuple[Any, ...]]) -> list[Message]:
    """The messages of the rows that can be read; each one that cannot is logged and left
    out, so that one damaged row does not take a whole listing down."""
    messages = []
    for row in rows:
        try:
            messages.append(message_from_row(row))
        except CorruptRecord as exc:
            log.error("left out a stored message that cannot be read",
                      extra={"error": exc.message})
    return messages


class SqliteStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, message: Message) -> tuple[Message, bool]:
        return await self._create(message, queue_it=False)

    async def create_queued(self, message: Message) -> tuple[Message, bool]:
        return await self._create(message.mark_queued(), queue_it=True)

    async def _create(self, message: Message, *, queue_it: bool) -> tuple[Message, bool]:
        doc = orjson.dumps(message_to_doc(message))
        key = message.key

        def insert(conn: sqlite3.Connection) -> tuple[Message, bool]:
            # rowcount and lastrowid, not RETURNING: that costs 7.5 us of the insert's 19
            inserted = conn.execute(
                queries.INSERT_MESSAGE,
                (key.sender_id, key.message_id, message.status.value,
                 message.fingerprint, message.created_at.isoformat(),
                 message.updated_at.isoformat(), int(message.queued), doc,
                 message.destination),
            )
            if inserted.rowcount == 0:  # ON CONFLICT DO NOTHING: it was there
                existing = conn.execute(
                    queries.GET_MESSAGE, (key.sender_id, key.message_id)).fetchone()
                return message_from_row(existing), False
            conn.execute(queries.INSERT_BODY, (inserted.lastrowid, message.content.body))
            conn.execute(queries.ENSURE_DESTINATION, (key.sender_id, message.destination))
            if queue_it:
                due_at = message.next_attempt_at or message.created_at
                conn.execute(queries.ENQUEUE, (key.sender_id, key.message_id,
                                               due_at.timestamp(), message.destination))
            return message, True

        size = len(doc) + len(message.content.body or b"")
        stored, created = await self._db.write(
            insert, replayable=size <= REPLAYABLE_BYTES, size=size)
        return (stored.with_version(1) if created else stored), created

    async def update_settled(self, message: Message, claim: Claim) -> Message:
        key = claim.key
        if message.status is Status.RETRYING and message.next_attempt_at is not None:
            settle: tuple[str, tuple[object, ...]] = (queries.RESCHEDULE, (
                message.next_attempt_at.timestamp(), key.sender_id, key.message_id,
                claim.receipt))
        else:
            settle = (queries.COMPLETE, (key.sender_id, key.message_id, claim.receipt))
        # an outcome lost with the power: the entry's lease ends, the message goes again
        return await self._update(message, settle, durable=False)

    async def update_queued(self, message: Message, due_at: datetime) -> Message:
        key = message.key
        return await self._update(message, (queries.ENQUEUE, (
            key.sender_id, key.message_id, due_at.timestamp(), message.destination)))

    async def update_dequeued(self, message: Message) -> Message:
        key = message.key
        return await self._update(message, (queries.DEQUEUE, (key.sender_id, key.message_id)))

    async def get(self, key: MessageKey, *, with_body: bool = True) -> Message | None:
        """Without the body, the BLOB (up to 6 MiB) is not read at all."""
        sql = queries.GET_MESSAGE if with_body else queries.GET_MESSAGE_WITHOUT_BODY
        row = await self._db.read(
            lambda conn: conn.execute(sql, (key.sender_id, key.message_id)).fetchone())
        return message_from_row(row) if row is not None else None

    async def update(self, message: Message) -> Message:
        return await self._update(message, None)

    async def _update(self, message: Message, then: tuple[str, tuple[object, ...]] | None,
                      *, durable: bool = True) -> Message:
        params = update_params(message)

        def update(conn: sqlite3.Connection) -> None:
            if conn.execute(queries.UPDATE_MESSAGE, params).rowcount != 1:
                raise StaleWrite()  # the savepoint is rolled back: `then` never ran
            if then is not None:
                conn.execute(*then)

        size = len(cast("bytes", params[3]))  # the doc
        await self._db.write(update, durable=durable, replayable=size <= REPLAYABLE_BYTES,
                             size=size)
        return message.with_version(message.version + 1)

    async def list(
        self, sender_id: str, status: Status | None, limit: int, cursor: str | None
    ) -> Page:
        before = decode_position(cursor)
        params = {"sender": sender_id, "status": status.value if status else None,
                  "before": END if before is None else before, "limit": limit + 1}
        sql = queries.LIST_MESSAGES if status is None else queries.LIST_MESSAGES_IN_STATUS
        rows = await self._db.read(lambda conn: conn.execute(sql, params).fetchall())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(readable_rows(rows), encode_cursor(rows[-1][0]) if more else None)

    async def failed_between(
        self, sender_id: str, destination: str | None, since: datetime, until: datetime,
        limit: int,
    ) -> Sequence[Message]:
        # compared as text with the stored times, which are UTC
        params = {"sender": sender_id, "destination": destination,
                  "since": since.astimezone(UTC).isoformat(),
                  "until": until.astimezone(UTC).isoformat(), "limit": limit}
        rows = await self._db.read(
            lambda conn: conn.execute(queries.FAILED_BETWEEN, params).fetchall())
        return readable_rows(rows)

    async def expire(self, changed_before: datetime, limit: int) -> int:
        """One short write transaction per call: the caller keeps batches small, so that
        submissions and attempts never wait long behind it; bodies of up to EXPIRE_BYTES in
        all, too (freeing a body reads each of its pages: 60 of 6 MiB held the writer for
        1.9 s, and the write's savepoint keeps a copy of each in memory), so a call may
        delete fewer than `limit` while more are due. Freed pages are reused by later
        writes, so a steady rate keeps a steady file size."""
        before = changed_before.astimezone(UTC).isoformat()

        def expired(conn: sqlite3.Connection) -> tuple[list[tuple[int]], int]:
            rows: list[tuple[int]] = []
            size = 0
            for seq, body_size in conn.execute(queries.EXPIRED_MESSAGES,
                                               (before, limit)).fetchall():
                if rows and size + body_size > EXPIRE_BYTES:
                    break
                size += body_size
                rows.append((seq,))
            return rows, size

        def delete(conn: sqlite3.Connection) -> int:
            rows, _ = expired(conn)
            conn.executemany(queries.DELETE_BODY, rows)
            conn.executemany(queries.DELETE_MESSAGE, rows)
            return len(rows)

        # its size in its batch's bound: the bodies it frees, as read just before (counted
        # at EXPIRE_BYTES, every sweep's write took a commit of its own: helper-75)
        _, size = await self._db.read(expired)
        return await self._db.write(delete, size=size)

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        rows = await self._db.read(
            lambda conn: conn.execute(
                queries.UNQUEUED_MESSAGES, (created_before.isoformat(), limit)
            ).fetchall()
        )
        return readable_rows(rows)

    async def ping(self) -> None:
        await self._db.check_writable()
