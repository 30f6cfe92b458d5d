"""WorkQueue on SQLite: a visibility time per entry, as SQS has, with receipts for leases."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from notify_relay.adapters.sqlite import queries
from notify_relay.adapters.sqlite.database import SqliteDatabase
from notify_relay.adapters.sqlite.queries import INLINE_BODY_BYTES as INLINE
from notify_relay.adapters.sqlite.store import message_from_row, update_params
from notify_relay.adapters.turns import RoundRobin
from notify_relay.clock import utcnow
from notify_relay.domain.destination import DestinationKey, fair_shares
from notify_relay.domain.errors import CorruptRecord
from notify_relay.domain.message import Message, MessageKey
from notify_relay.ports import Claim, Entry, Slots, Started


def _execute(sql: str, params: tuple[object, ...]) -> Callable[[sqlite3.Connection], int]:
    return lambda conn: conn.execute(sql, params).rowcount


def _receipts(count: int) -> list[str]:
    """`count` receipts (16 hex digits each) from one draw of the system's randomness: a
    draw an entry was 0.8 us, most of it the getrandom call."""
    drawn = secrets.token_hex(8 * count)
    return [drawn[i:i + 16] for i in range(0, 16 * count, 16)]


def _started(row: tuple[Any, ...], start: Callable[[Message], Message | None]
             ) -> tuple[Started, tuple[object, ...]] | None:
    """The start of an entry's message's attempt, where `start` says so, and START_MESSAGE's
    parameters, to write it over the row and version read; `row` is the message as
    DUE_MESSAGES or GET_MESSAGE read it, body included (all None when the entry has no
    message)."""
    if row[0] is None:
        return None
    try:
        before = message_from_row(row)
    except CorruptRecord:  # the Relay reads it again and sets it aside
        return None
    after = start(before)
    if after is None:
        return None
    if after.version != before.version:  # written over the version read
        after = after.with_version(before.version)
    return (Started(before, after.with_version(before.version + 1)),
            (*update_params(after), row[0]))


def _write_start(conn: sqlite3.Connection,
                 started: tuple[Started, tuple[object, ...]] | None) -> Started | None:
    """`started` (from _started) written, if its message's row and version are still those
    read; None when there is none or it no longer matches."""
    if started is None or conn.execute(queries.START_MESSAGE, started[1]).rowcount != 1:
        return None
    return started[0]


class SqliteQueue:
    exclusive_claims = True

    def __init__(self, db: SqliteDatabase, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._clock = clock
        self._turns = RoundRobin()

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None,
        destination: str = "",
    ) -> None:
        params = (key.sender_id, key.message_id, due_at.timestamp(), destination)
        await self._db.write(_execute(queries.ENQUEUE, params))

    async def enqueue_many(self, entries: Sequence[Entry]) -> None:
        rows = [(e.key.sender_id, e.key.message_id, e.due_at.timestamp(), e.destination)
                for e in entries]
        await self._db.write(lambda conn: conn.executemany(queries.ENQUEUE, rows).rowcount)

    async def claim(
        self, limit: int, lease_seconds: float, slots: Slots | None = None
    ) -> Sequence[Claim]:
        return await self._claim(limit, lease_seconds, slots, None)

    async def claim_started(
        self, limit: int, lease_seconds: float, slots: Slots | None,
        start: Callable[[Message], Message | None], body_bytes: int | None = None,
        body_bytes_of: Callable[[DestinationKey], int] | None = None,
    ) -> Sequence[Claim]:
        return await self._claim(limit, lease_seconds, slots, start, body_bytes, body_bytes_of)

    async def _claim(
        self, limit: int, lease_seconds: float, slots: Slots | None,
        start: Callable[[Message], Message | None] | None, body_bytes: int | None = None,
        body_bytes_of: Callable[[DestinationKey], int] | None = None,
    ) -> Sequence[Claim]:
        now = self._clock().timestamp()
        lease_until = self._clock() + timedelta(seconds=lease_seconds)

        # with `start`, each entry's message comes in the same row, after the entry's four
        # columns (DUE_MESSAGES), then its body, the body's size and the size the claim
        # counts (body and document)
        every, of_destination = ((queries.DUE_ENTRIES, queries.DUE_ENTRIES_OF_DESTINATION)
                                 if start is None else
                                 (queries.DUE_MESSAGES, queries.DUE_MESSAGES_OF_DESTINATION))
        room = body_bytes if start is not None and body_bytes is not None else None

        # the destinations whose entries a read took up, in order; given their turn
        # (RoundRobin.served) once those entries are claimed
        served: list[DestinationKey] = []

        def due_entries(conn: sqlite3.Connection, now: float = now, limit: int = limit,
                        slots: Slots | None = slots, room: int | None = room,
                        held_of: dict[DestinationKey, int] | None = None,
                        ) -> list[tuple[Any, ...]]:
            """`held_of`: a second read of one claim (its write's), with the bodies the first
            took of each destination; it takes none past a bound, not even a first one."""
            reads: list[tuple[DestinationKey | None, str, tuple[object, ...]]]
            if slots is None:
                reads = [(None, every, (now, limit))]
            else:
                # a destination's share is bounded by its entries too, so that what a small
                # one cannot use goes to the others
                ready = [(key, min(n, entries))
                         for s, d, entries in conn.execute(queries.DUE_DESTINATIONS, (now,))
                         if (n := slots(key := DestinationKey(s, d))) > 0]
                shares = fair_shares(self._turns.order(ready), limit)
                reads = [(key, of_destination, (key.sender_id, key.name, now, share))
                         for key, share in shares.items()]
            rows: list[tuple[Any, ...]] = []
            taken = 0
            for of, sql, params in reads:
                room_of = (body_bytes_of(of) if room is not None and of is not None
                           and body_bytes_of is not None else None)
                if room_of is not None and held_of is not None and of is not None:
                    room_of -= held_of.get(of, 0)
                    if room_of <= 0:
                        continue
                taken_of = 0
                # row by row: each row's body is read as it comes, none past `room`
                with contextlib.closing(conn.execute(sql, params)) as cursor:
                    for row in cursor:
                        # only rows that start come with their sizes, last
                        size = (row[-1] or 0) if start is not None else 0
                        if held_of is not None and room_of is not None and (
                                taken_of + size > room_of):
                            break  # a second read: none past a destination's bound either
                        if (room is not None and (rows or held_of is not None)
                                and taken + size > room):
                            # its size is known unread: past the bound, it waits (and
                            # its destination keeps its turn) unless it comes first
                            return rows
                        if of is not None and (not served or served[-1] != of):
                            served.append(of)
                        if start is not None and (row[-2] or 0) > INLINE:
                            # left out of the row: read now that the claim takes it
                            (body,) = conn.execute(queries.BODY, (row[4],)).fetchone()
                            row = (*row[:-3], body, *row[-2:])
                        rows.append(row)
                        if room is None:
                            continue
                        taken += size
                        taken_of += size
                        if taken >= room:
                            return rows
                        if room_of is not None and taken_of >= room_of:
                            break  # this destination's share: on to the next
            return rows

        if start is None:
            def claim(conn: sqlite3.Connection) -> list[Claim]:
                try:
                    due = due_entries(conn)
                finally:
                    # only those read were served: one the bound left unread keeps its
                    # turn, else it stayed behind a backlog of big bodies until that was gone
                    self._turns.served(served)
                claims = [Claim(MessageKey(row[1], row[2]), receipt, lease_until, row[3])
                          for row, receipt in zip(due, _receipts(len(due)), strict=True)]
                conn.executemany(queries.LEASE, [
                    (lease_until.timestamp(), c.receipt, row[0])
                    for row, c in zip(due, claims, strict=True)])
                return claims

            # a lease lost with the power: the entry is claimed again
            return await self._db.write(claim, durable=False)

        # Read, decoded and started before the write: SQLite's one writer is the two
        # processes' bottleneck, and the read (bodies included) and the Python that turns
        # rows into started messages were most of a claim's time in it. The read sees what
        # is committed; the write takes an entry only if it is still due as read, and
        # writes its start only over the message's row and version read: one that changed
        # since (a retry by hand, say) is read again in the write and started from that.
        due = await self._db.read(due_entries)
        if not due:
            return []
        lease = lease_until.timestamp()
        prepared = [(Claim(key := MessageKey(row[1], row[2]), receipt, lease_until, row[3]),
                     (lease, receipt, row[0], key.sender_id, key.message_id, now),
                     _started(row[4:-2], start))
                    for row, receipt in zip(due, _receipts(len(due)), strict=True)]

        def take(conn: sqlite3.Connection) -> list[Claim]:
            claims = []
            for claim, lease_params, started in prepared:
                if conn.execute(queries.LEASE_IF_DUE, lease_params).rowcount != 1:
                    continue  # taken, rescheduled or gone since the read
                begun = _write_start(conn, started)
                if started is not None and begun is None:
                    # changed since the read (retried by hand, say): started from what
                    # is there now, as a claim that read in its write did, so that its
                    # body is counted in the claim's
                    row = conn.execute(queries.GET_MESSAGE, (claim.key.sender_id,
                                                             claim.key.message_id)).fetchone()
                    begun = _write_start(conn, _started(row, start) if row is not None else None)
                if begun is not None:
                    claim = Claim(claim.key, claim.receipt, lease_until, claim.destination,
                                  started=begun)
                claims.append(claim)
            claims.extend(more(conn))
            return claims

        def more(conn: sqlite3.Connection) -> list[Claim]:
            """What came due while the write waited for its turn, up to the claim's limits,
            as the claim whose read was in its write took it: paced, a claim that took only
            what its read found took half as many a claim, and wrote twice as often."""
            wanted = limit - len(prepared)
            left = None if room is None else room - sum(row[-1] or 0 for row in due)
            if wanted <= 0 or (left is not None and left <= 0):
                return []
            read_of: dict[DestinationKey, int] = {}
            held_of: dict[DestinationKey, int] = {}
            for row in due:
                key = DestinationKey(row[1], row[3])
                read_of[key] = read_of.get(key, 0) + 1
                held_of[key] = held_of.get(key, 0) + (row[-1] or 0)
            slots_left = (None if slots is None else
                          lambda key: slots(key) - read_of.get(key, 0))
            claims = []
            # due by now, but not by the lease take() gave: a clock past it (a step, a
            # pause) would have this read take those again
            due_by = min(self._clock().timestamp(), lease - 0.001)
            rows = due_entries(conn, due_by, wanted, slots_left, left, held_of)
            for row, receipt in zip(rows, _receipts(len(rows)), strict=True):
                conn.execute(queries.LEASE, (lease, receipt, row[0]))
                claims.append(Claim(MessageKey(row[1], row[2]), receipt, lease_until, row[3],
                                    started=_write_start(conn, _started(row[4:-2], start))))
            return claims

        # a lease and an attempt's start lost with the power: the entry is claimed again;
        # its size in its batch's bound: what its read took (what more() reads is within
        # the claim's own bound)
        claims = await self._db.write(take, durable=False,
                                      size=sum(row[-1] or 0 for row in due))
        # only the destinations whose entries were claimed have had their turn: one whose
        # entries the bound left unread, or another claim took meanwhile, keeps it
        taken = {claim.destination_key for claim in claims}
        self._turns.served([key for key in served if key in taken])
        return claims

    async def complete(self, claim: Claim) -> None:
        params = (claim.key.sender_id, claim.key.message_id, claim.receipt)
        await self._db.write(_execute(queries.COMPLETE, params))

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        params = (due_at.timestamp(), claim.key.sender_id, claim.key.message_id, claim.receipt)
        await self._db.write(_execute(queries.RESCHEDULE, params))

    async def dead_letter(self, claim: Claim) -> None:
        await self.complete(claim)

    async def next_due(self, slots: Slots | None = None) -> datetime | None:
        if slots is None:
            row = await self._db.read(lambda conn: conn.execute(queries.NEXT_DUE).fetchone())
            when = row[0] if row else None
        else:
            def first_ready(conn: sqlite3.Connection) -> float | None:
                for s, d, visible in conn.execute(queries.DESTINATIONS_BY_NEXT_VISIBLE):
                    if slots(DestinationKey(s, d)) > 0:
                        return float(visible)
                return None

            when = await self._db.read(first_ready)
        return datetime.fromtimestamp(when, UTC) if when is not None else None

    async def recover(self) -> int:
        now = self._clock().timestamp()
        return await self._db.write(_execute(queries.RECOVER, (now,)))

    async def depth(self) -> int:
        row = await self._db.read(lambda conn: conn.execute(queries.DEPTH).fetchone())
        return int(row[0])

    async def ping(self) -> None:
        await self._db.read(lambda conn: conn.execute("SELECT 1").fetchone())
