"""Each write's savepoint journal stays in memory and small: SQLite's statement journal,
spilled to a temporary file past 64 KiB, once cost 37 write syscalls and 79 KB a submission
(13x the WAL's own); a write that would change pages by the thousand (retention's deletes)
is bounded by size, so that the copies held in memory stay small."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, SqliteStore
from notify_relay.adapters.sqlite.schema import MIGRATIONS
from tests.factories import make_message
from tests.sql_trace import savepoints

pytestmark = pytest.mark.anyio
PROC_IO = Path("/proc/self/io")
PROC_STATUS = Path("/proc/self/status")
# a child's peak RSS, read in its own process: VmHWM is its own memory's, where ru_maxrss
# starts at the peak of the process that forked it (an xdist worker's 200 MiB, which hid
# any growth below that)
PEAK_KIB = """
def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/self/status")
"""


def write_syscalls() -> int:
    for line in PROC_IO.read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/self/io")


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts write syscalls in /proc/self/io")
async def test_a_batch_of_submissions_writes_the_wal_and_little_else(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        store = SqliteStore(db)
        await store.create_queued(make_message("warm-up"))  # the file's first pages
        n = 40
        before = write_syscalls()
        await asyncio.gather(*(store.create_queued(make_message(f"m-{i}")) for i in range(n)))
        per_message = (write_syscalls() - before) / n
    finally:
        db.close()
    assert per_message < 15, per_message  # 37 with the journal in a temporary file


async def test_a_write_that_fails_half_way_is_undone_alone(tmp_path: Path) -> None:
    """Its savepoint's journal, now in memory, still undoes what it did; the writes beside
    it in the batch commit."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))

        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 2000)])
            raise ValueError("half done")

        results = await asyncio.gather(
            db.write(lambda conn: conn.execute("INSERT INTO t VALUES (0)")),
            db.write(half_then_fail),
            db.write(lambda conn: conn.execute("INSERT INTO t VALUES (-1)")),
            return_exceptions=True)
        assert isinstance(results[1], ValueError), results
        assert await db.read(lambda c: c.execute("SELECT v FROM t ORDER BY v").fetchall()) == [
            (-1,), (0,)]
    finally:
        db.close()


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="reads VmHWM in /proc/self/status")
def test_retention_deletes_big_bodies_without_holding_them_in_memory(tmp_path: Path) -> None:
    """In a process of its own, for its peak RSS: 120 final messages of 1 MiB each expire.
    A write's savepoint keeps a copy of every page it frees, in memory: in one write, the
    deletes held a copy of every body; expire() bounds a write to EXPIRE_BYTES of them."""
    script = PEAK_KIB + textwrap.dedent(f"""
        import asyncio, json, os
        from dataclasses import replace
        from datetime import timedelta
        from notify_relay.adapters.sqlite import SqliteDatabase, SqliteStore
        from notify_relay.domain.status import Status
        from tests.factories import NOW, make_message

        async def main():
            db = SqliteDatabase({str(tmp_path / "relay.db")!r})
            db.open()
            store = SqliteStore(db)
            body = os.urandom(1 << 20)
            for i in range(120):
                message = make_message(f"m-{{i}}", body=body)
                await store.create(replace(message, status=Status.DELIVERED))
            del body, message
            before = peak_kib()
            expired = 0
            while count := await store.expire(NOW + timedelta(days=1), 500):
                expired += count
            after = peak_kib()
            db.close()
            print(json.dumps({{"expired": expired, "grew_kib": after - before}}))

        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=Path(__file__).parents[2])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["expired"] == 120
    assert result["grew_kib"] < 40 * 1024, result  # 120 MiB of bodies: ~125 MiB held before


def write_version_1_messages(path: Path, count: int) -> None:
    """`count` final messages as the first schema stored them."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    doc = b'{"url": "https://a.example/h", "pad": "' + b"p" * 300 + b'"}'
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages (sender_id, message_id, status, fingerprint, created_at, "
        "updated_at, queued, version, doc) VALUES ('s', ?, 'DELIVERED', 'f', ?, ?, 1, 1, ?)",
        ((f"m-{i:08d}", f"2026-01-01T00:00:{i % 60:02d}", f"2026-01-01T{i:012d}", doc)
         for i in range(count)))
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="reads VmHWM in /proc/self/status")
def test_migrations_at_open_do_not_hold_the_file_in_memory(tmp_path: Path) -> None:
    """In a process of its own, for its peak RSS: a file of the first schema with 150,000
    messages opened (migrated) by this version. Migration 2 rewrites every message in one
    statement, later ones build indexes: with temp_store = MEMORY their statement journal
    and sorts were held in memory (68 MiB here, about the messages table; 78 MiB for
    migration 7 alone on 1M messages), where in files they cost 4 MiB. Only the writes
    after open() keep their journals in memory."""
    path = tmp_path / "old.db"
    write_version_1_messages(path, 150_000)
    script = PEAK_KIB + textwrap.dedent(f"""
        import json
        from notify_relay.adapters.sqlite import SqliteDatabase

        before = peak_kib()
        db = SqliteDatabase({str(path)!r})
        db.open()
        after = peak_kib()
        (temp_store,) = db._connection().execute("PRAGMA temp_store").fetchone()
        db.close()
        print(json.dumps({{"grew_kib": after - before, "temp_store": temp_store}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120, cwd=Path(__file__).parents[2])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["temp_store"] == 2  # MEMORY, for the writes after open()
    assert result["grew_kib"] < 20 * 1024, result


def test_both_processes_writers_keep_their_journals_in_memory(tmp_path: Path) -> None:
    """The file's opener (after its migrations) and the API process that attaches to it."""
    owner, api = SqliteDatabase(tmp_path / "relay.db"), SqliteDatabase(tmp_path / "relay.db")
    owner.open()
    try:
        api.attach()
        try:
            for db in (owner, api):
                assert db._connection().execute("PRAGMA temp_store").fetchone() == (2,)
        finally:
            api.close()
    finally:
        owner.close()


async def test_retention_that_fails_half_way_is_undone_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete of expire() that fails after the bodies went (a damaged page, say): its
    savepoint puts them back, and the submissions in the same batch commit. Without one, the
    whole batch failed, at every sweep."""
    from dataclasses import replace
    from datetime import timedelta

    from notify_relay.adapters.sqlite import queries
    from notify_relay.domain.status import Status
    from tests.factories import NOW

    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        store = SqliteStore(db)
        await store.create(replace(make_message("old", body=b"x" * 1000),
                                   status=Status.DELIVERED))
        # not DML: executemany() raises a ProgrammingError, after DELETE_BODY has run
        monkeypatch.setattr(queries, "DELETE_MESSAGE", "SELECT ?")
        results = await asyncio.gather(
            store.create(make_message("new-1")),
            store.expire(NOW + timedelta(days=1), 10),
            store.create(make_message("new-2")),
            return_exceptions=True)
        assert isinstance(results[1], sqlite3.ProgrammingError), results
        for m in ("new-1", "new-2"):  # committed beside it
            assert await store.get(make_message(m).key) is not None, results
        old = await store.get(make_message("old").key)
        assert old is not None
        assert old.content.body == b"x" * 1000
    finally:
        db.close()


async def test_replayable_writes_in_a_row_share_a_savepoint(tmp_path: Path) -> None:
    """What write(replayable=True) buys: one savepoint for up to RUN_WRITES of them in a row
    instead of one each; any other write still has its own."""
    from notify_relay.adapters.sqlite.database import RUN_WRITES

    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
        opened = savepoints(db._connection())

        def insert(v: int) -> Callable[[sqlite3.Connection], int]:
            return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (v,)).rowcount

        first, second = RUN_WRITES + 8, 29
        await asyncio.gather(
            *(db.write(insert(v), replayable=True) for v in range(first)),
            db.write(insert(-1)),
            *(db.write(insert(v), replayable=True) for v in range(first, first + second)))
        db._connection().set_trace_callback(None)
        assert opened == ["SAVEPOINT run", "SAVEPOINT run", "SAVEPOINT w", "SAVEPOINT run"]
        (count,) = await db.read(lambda c: c.execute("SELECT count(*) FROM t").fetchone())
        assert count == first + second + 1
    finally:
        db.close()


async def test_a_replayable_write_that_fails_is_undone_alone(tmp_path: Path) -> None:
    """The writes of its run are undone with it and run again, each in its own savepoint:
    those before it run twice, and commit once; a write that is not replayable runs once."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
        runs: dict[int, int] = {}

        def insert(v: int) -> Callable[[sqlite3.Connection], int]:
            def fn(conn: sqlite3.Connection) -> int:
                runs[v] = runs.get(v, 0) + 1
                conn.execute("INSERT INTO t VALUES (?)", (v,))
                if v == 2:
                    raise ValueError("half done")
                return v
            return fn

        results = await asyncio.gather(
            db.write(insert(0)),  # not replayable: its own savepoint, run once
            *(db.write(insert(v), replayable=True) for v in (1, 2, 3)),
            return_exceptions=True)
        assert results[:2] == [0, 1], results
        assert results[3] == 3, results
        assert isinstance(results[2], ValueError), results
        assert runs == {0: 1, 1: 2, 2: 2, 3: 1}
        assert await db.read(lambda c: c.execute("SELECT v FROM t ORDER BY v").fetchall()) == [
            (0,), (1,), (3,)]
    finally:
        db.close()


async def test_a_big_write_keeps_a_savepoint_of_its_own(tmp_path: Path) -> None:
    """Replayable or not by the bytes it writes, doc included: a message with a long header
    and no body is rewritten whole at each update, and 32 updates of a 2 MB doc in one
    shared savepoint held 126 MiB of page copies (helper-68)."""
    from dataclasses import replace

    from notify_relay.adapters.sqlite.store import REPLAYABLE_BYTES

    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        store = SqliteStore(db)
        plain = make_message("big", body=None)
        big = plain.changed(content=replace(
            plain.content, headers=(("X-Big", "x" * (REPLAYABLE_BYTES + 1)),)))
        messages = [make_message("a"), make_message("b"), big, make_message("c")]
        opened = savepoints(db._connection())
        stored = await asyncio.gather(*(store.create(m) for m in messages))
        assert opened == ["SAVEPOINT run", "SAVEPOINT w", "SAVEPOINT w"]
        opened.clear()
        await asyncio.gather(*(store.update(m) for m, _ in stored))
        assert opened == ["SAVEPOINT run", "SAVEPOINT w", "SAVEPOINT w"]
        db._connection().set_trace_callback(None)
        read = await store.get(big.key)
        assert read is not None
        assert read.content.headers == big.content.headers
    finally:
        db.close()
