"""Retention on a real SQLite file: only final messages past the window go, the query
reads its index, and a file filled and expired again and again keeps its size."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from notify_relay.adapters.sqlite import (
    SqliteDatabase,
    SqliteDestinationStore,
    SqliteStore,
    queries,
)
from notify_relay.adapters.sqlite.database import FREE_SLACK
from notify_relay.adapters.sqlite.store import EXPIRE_BYTES
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from notify_relay.domain.status import Status
from notify_relay.retention import RetentionSweeper
from tests.factories import NOW, make_message

pytestmark = pytest.mark.anyio


async def fill(store: SqliteStore, cycle: int, count: int) -> None:
    """`count` messages of 4 KiB delivered at NOW + cycle days."""
    at = NOW + timedelta(days=cycle)
    for i in range(count):
        stored, _ = await store.create(make_message(f"c{cycle}-{i}", body=b"x" * 4096, now=at))
        started = await store.update(stored.start_attempt(at))
        await store.update(started.finish_attempt(AttemptResult(status_code=200),
                                                  Decision(Outcome.SUCCESS), started_at=at,
                                                  duration_ms=1, now=at))


async def test_a_file_filled_and_expired_again_and_again_keeps_its_size(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = SqliteDatabase(path)
    db.open()
    store = SqliteStore(db)
    sizes = []
    try:
        for cycle in range(4):
            await fill(store, cycle, 400)
            # a day later, all of this cycle's messages are past a one-day window
            sweeper = RetentionSweeper(store, timedelta(days=1),
                                       clock=lambda c=cycle: NOW + timedelta(days=c + 2),
                                       batch=150)
            assert await sweeper.sweep() == 400
            sizes.append(path.stat().st_size + Path(f"{path}-wal").stat().st_size)  # noqa: ASYNC240
    finally:
        db.close()
    # the pages freed by one cycle hold the next: no growth after the first
    assert max(sizes[1:]) <= sizes[0] * 1.05, sizes


async def test_waiting_messages_are_kept_whatever_their_age(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    store = SqliteStore(db)
    try:
        await store.create(make_message("waiting", now=NOW))
        sweeper = RetentionSweeper(store, timedelta(days=30),
                                   clock=lambda: NOW + timedelta(days=365))
        assert await sweeper.sweep() == 0
        assert await store.get(make_message("waiting").key) is not None
    finally:
        db.close()


def test_the_expiry_query_reads_its_index(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    db.close()
    conn = sqlite3.connect(tmp_path / "relay.db")
    try:
        plan = " ".join(row[3] for row in conn.execute(
            "EXPLAIN QUERY PLAN " + queries.EXPIRED_MESSAGES, ("2026-01-01", 10)))
    finally:
        conn.close()
    assert "USING INDEX messages_final_by_updated" in plan or \
        "USING COVERING INDEX messages_final_by_updated" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def file_bytes(path: Path) -> int:
    return path.stat().st_size


async def test_a_burst_expired_gives_its_space_back_to_the_disk(tmp_path: Path) -> None:
    """A backlog delivered once (an outage caught up) and then expired: a new file
    releases the pages beyond a small slack instead of keeping its high-water mark."""
    path = tmp_path / "relay.db"
    db = SqliteDatabase(path)
    db.open()
    store = SqliteStore(db)
    try:
        await fill(store, 0, 1500)  # about 6 MiB of bodies
        await db.read(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        peak = file_bytes(path)
        sweeper = RetentionSweeper(store, timedelta(days=1), clock=lambda: NOW + timedelta(days=2),
                                   release_space=db.release_free_pages)
        assert await sweeper.sweep() == 1500
        await db.read(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        after = file_bytes(path)
        (free,) = await db.read(lambda c: c.execute("PRAGMA freelist_count").fetchone())
        (pages,) = await db.read(lambda c: c.execute("PRAGMA page_count").fetchone())
    finally:
        db.close()
    assert peak > 6_000_000, peak
    assert after < peak * 0.2, (peak, after)
    assert free <= pages * FREE_SLACK + 1, (free, pages)


async def test_a_file_from_before_incremental_vacuum_still_reuses_its_pages(
    tmp_path: Path
) -> None:
    path = tmp_path / "relay.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("CREATE TABLE earlier (x)")  # the mode is fixed once a table exists
    conn.close()
    db = SqliteDatabase(path)
    db.open()
    store = SqliteStore(db)
    try:
        await fill(store, 0, 300)
        sweeper = RetentionSweeper(store, timedelta(days=1), clock=lambda: NOW + timedelta(days=2),
                                   release_space=db.release_free_pages)
        assert await sweeper.sweep() == 300
        assert await db.release_free_pages() == 0
        (free,) = await db.read(lambda c: c.execute("PRAGMA freelist_count").fetchone())
        await db.read(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        size = file_bytes(path)
        await fill(store, 5, 300)  # the same amount again fits in the freed pages
        await db.read(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        assert file_bytes(path) <= size * 1.05
    finally:
        db.close()
    assert free > 300  # the first fill's pages were freed, not given back


async def test_a_failed_message_retried_by_hand_is_kept_and_pending(tmp_path: Path) -> None:
    """Retention and the pending count follow the status both ways: into FAILED, and out
    of it again when the message is retried by hand."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    store = SqliteStore(db)
    destinations = SqliteDestinationStore(db)
    try:
        stored, _ = await store.create(make_message("m", now=NOW))
        started = await store.update(stored.start_attempt(NOW))
        failed = await store.update(started.finish_attempt(
            AttemptResult(status_code=404), Decision(Outcome.GIVE_UP), started_at=NOW,
            duration_ms=1, now=NOW))
        assert failed.status.is_final
        key = stored.destination_key
        assert await destinations.pending(key) == 0
        await store.update(failed.retry_by_hand(NOW))
        assert await destinations.pending(key) == 1
        sweeper = RetentionSweeper(store, timedelta(days=1), clock=lambda: NOW + timedelta(days=9))
        assert await sweeper.sweep() == 0
        assert await store.get(stored.key) is not None
    finally:
        db.close()


async def test_big_bodies_expire_a_few_mib_a_write_and_all_of_them_go(tmp_path: Path) -> None:
    """Freeing a body reads each of its pages: 60 bodies of 6 MiB in one write held the
    writer (and the loop) for 1.9 s. A write now frees up to EXPIRE_BYTES of bodies, one
    message at least, and the sweep goes on until nothing is left."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    store = SqliteStore(db)
    body = b"x" * (1 << 20)
    try:
        for i in range(10):
            await store.create(replace(make_message(f"big-{i}", body=body, now=NOW),
                                       status=Status.DELIVERED))
        await store.create(replace(make_message("huge", body=body * 5, now=NOW),
                                   status=Status.DELIVERED))
        later = NOW + timedelta(days=2)
        assert await store.expire(later, 500) == EXPIRE_BYTES // len(body)
        sweeper = RetentionSweeper(store, timedelta(days=1), clock=lambda: later)
        assert await sweeper.sweep() == 11 - EXPIRE_BYTES // len(body)  # the huge one too
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM bodies").fetchone()) == (0,)
    finally:
        db.close()
