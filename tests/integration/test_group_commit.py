"""Group commit with a durable COMMIT off the event loop: writes that arrive while a commit runs
wait for it and go into the next batch; nobody's write returns before its own commit; reads
see committed data only; a failed commit fails its whole batch and leaves the file usable."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_relay.adapters.sqlite import (
    SqliteDatabase,
    SqliteDestinationStore,
    SqliteQueue,
    SqliteStore,
)
from notify_relay.adapters.sqlite.write_turn import WriteTurn
from notify_relay.domain.errors import StoreUnavailable
from notify_relay.domain.retry import AttemptResult, Decision, Outcome
from tests.factories import NOW, make_message
from tests.sql_trace import traced

pytestmark = pytest.mark.anyio


def insert(value: int) -> object:
    return lambda conn: conn.execute("INSERT INTO t (v) VALUES (?)", (value,)).lastrowid


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


@pytest.fixture
async def db(tmp_path: Path) -> object:
    database = SqliteDatabase(tmp_path / "relay.db")
    database.open()
    await database.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
    yield database
    database.close()


async def test_concurrent_writes_share_commits_and_all_land(db: SqliteDatabase,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    commits = 0
    real_commit = db._commit

    def counted() -> None:
        nonlocal commits
        commits += 1
        real_commit()

    monkeypatch.setattr(db, "_commit", counted)
    await asyncio.gather(*(db.write(insert(i)) for i in range(500)))  # type: ignore[arg-type]
    assert await db.read(count) == 500
    assert 1 <= commits < 50  # batched: not a commit per write


async def test_a_write_during_a_commit_waits_for_it_and_reads_see_only_committed(
        db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started = threading.Event()
    real_commit = db._commit

    def slow_commit() -> None:  # an fsync that takes its time
        started.set()
        release.wait(5)
        real_commit()

    monkeypatch.setattr(db, "_commit", slow_commit)
    first = asyncio.ensure_future(db.write(insert(1)))  # type: ignore[arg-type]
    # its statements ran; its COMMIT is in the committer thread
    assert await asyncio.to_thread(started.wait, 5)
    ran = []
    second = asyncio.ensure_future(db.write(lambda conn: ran.append(count(conn))))
    await asyncio.sleep(0.05)  # the loop goes on meanwhile
    assert not first.done()
    assert not second.done()
    assert ran == []  # not run while the connection is committing
    assert await db.read(count) == 0  # the first row is not committed yet: not visible
    release.set()
    await first
    await second
    assert ran == [1]  # the second write ran after the first was committed
    assert await db.read(count) == 1


async def test_a_failed_commit_fails_its_batch_and_the_next_write_succeeds(
        db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    real_commit = db._commit

    def failing_commit() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(db, "_commit", failing_commit)
    results = await asyncio.gather(*(db.write(insert(i)) for i in range(5)),  # type: ignore[arg-type]
                                   return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    monkeypatch.setattr(db, "_commit", real_commit)
    await db.write(insert(9))  # type: ignore[arg-type]
    assert await db.read(count) == 1  # the failed batch was rolled back, nothing of it kept


async def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = SqliteDatabase(path)
    db.open()
    await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
    pending = asyncio.ensure_future(db.write(insert(1)))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # queued; its flush is scheduled, not run
    db.close()
    assert (await pending) is not None
    with sqlite3.connect(path) as conn:
        assert count(conn) == 1


def synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


async def test_records_alone_commit_under_normal_and_a_durable_write_decides_its_batch(
        db: SqliteDatabase) -> None:
    assert await db.write(synchronous, durable=False) == 1  # NORMAL: no fsync at COMMIT
    assert await db.write(synchronous) == 2  # FULL, the default
    # gathered into one transaction: the durable write decides for both
    assert await asyncio.gather(db.write(synchronous, durable=False),
                                db.write(synchronous)) == [2, 2]
    assert await db.write(synchronous, durable=False) == 1


async def test_only_an_attempt_s_start_and_outcome_skip_the_fsync(
        db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a client was told (a submission's 202, a retry, a destination's settings) is
    FULL; what the delivering process records may wait for the next fsync."""
    kinds: list[bool] = []
    real_write = db.write

    async def spied(fn: object, *, durable: bool = True, replayable: bool = False,
                    size: int = 0) -> object:
        kinds.append(durable)
        return await real_write(fn, durable=durable,  # type: ignore[arg-type]
                                replayable=replayable, size=size)

    monkeypatch.setattr(db, "write", spied)
    store, queue = SqliteStore(db), SqliteQueue(db)
    await store.create_queued(make_message("d-1"))
    assert kinds == [True]
    (claim,) = await queue.claim_started(10, 30.0, None, lambda m: m.start_attempt(NOW))
    assert claim.started is not None
    started = claim.started.after
    finished = started.finish_attempt(AttemptResult(status_code=200), Decision(Outcome.SUCCESS),
                                      started_at=NOW, duration_ms=1, now=NOW)
    written = await store.update_settled(finished, claim)
    assert kinds == [True, False, False]
    written = await store.update(written)  # any other change (a retry): durable
    await store.update_dequeued(written)  # a cancel: durable
    assert kinds == [True, False, False, True, True]
    assert await queue.depth() == 0
    # the worker writes its destinations' statistics (gate.flush) within a second of an
    # attempt: that durable commit's fsync puts the records before it on disk too
    destinations = SqliteDestinationStore(db)
    destination = await destinations.get(written.destination_key)
    assert destination is not None
    await destinations.save(destination)
    assert kinds[-1] is True


async def test_a_failed_batch_leaves_the_next_one_at_its_own_level(
        db: SqliteDatabase) -> None:
    """The setting is remembered only once it took: a batch that failed before its
    transaction (the file locked by another connection) changes nothing for the next."""
    blocker = sqlite3.connect(db.path, isolation_level=None)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await db.write(synchronous, durable=False)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await db.write(synchronous) == 2
    assert await db.write(synchronous, durable=False) == 1
    assert await db.write(synchronous) == 2


def size(path: Path) -> int:
    return path.stat().st_size


def commits_by_thread(conn: sqlite3.Connection) -> list[bool]:
    """For each COMMIT the connection runs from now on: whether it ran on this thread."""
    here = threading.get_ident()
    return traced(conn, lambda sql: threading.get_ident() == here if sql == "COMMIT" else None)


async def test_records_alone_commit_on_the_loop_and_a_durable_batch_in_the_thread(
        db: SqliteDatabase) -> None:
    """No fsync to wait for: handing the COMMIT to the thread and back cost more CPU than
    the COMMIT itself."""
    on_loop = commits_by_thread(db._connection())
    await db.write(insert(1), durable=False)  # type: ignore[arg-type]
    await db.write(insert(2))  # type: ignore[arg-type]
    await asyncio.gather(db.write(insert(3), durable=False),  # type: ignore[arg-type]
                         db.write(insert(4)))  # type: ignore[arg-type]
    await db.write(insert(5), durable=False)  # type: ignore[arg-type]
    assert on_loop == [True, False, False, True]
    assert await db.read(count) == 5


async def test_records_alone_never_checkpoint_and_the_next_durable_commit_does(
        db: SqliteDatabase, tmp_path: Path) -> None:
    """A checkpoint fsyncs the -wal and the database file: not on the loop."""
    path = tmp_path / "relay.db"
    before = size(path)
    for _ in range(12):  # 1,200 pages of records, past SQLite's 1,000 for a checkpoint
        await db.write(lambda conn: conn.executemany(
            "INSERT INTO t (v) VALUES (randomblob(4000))", [()] * 100), durable=False)
    assert size(Path(f"{path}-wal")) > 1000 * 4096
    assert size(path) == before  # all in the -wal file still
    await db.write(insert(1))  # type: ignore[arg-type]
    assert size(path) > before + 1000 * 4096  # copied by this durable commit's
    assert await db.read(count) == 1201


def checkpointed(conn: sqlite3.Connection) -> None:
    """Past 1,000 pages: its COMMIT copies the whole -wal file to the database file."""
    conn.executemany("INSERT INTO t (v) VALUES (randomblob(4000))", [()] * 1100)


def wal_salt(db: SqliteDatabase) -> bytes:
    """The -wal file's salts (https://sqlite.org/walformat.html): new each time it is
    started over."""
    with open(f"{db.path}-wal", "rb") as wal:
        return wal.read(24)[16:24]


async def test_the_wal_starts_over_in_the_thread_before_the_next_batch(
        db: SqliteDatabase) -> None:
    """After a checkpoint has copied every frame, the next transaction writes the -wal
    file's header again, and SQLite fsyncs it even at NORMAL: not on the loop. A write of
    its own does it in the thread; the batch after it commits where it would."""
    conn = db._connection()
    on_loop = commits_by_thread(conn)
    await db.write(checkpointed)
    salt = wal_salt(db)
    await db.write(insert(1), durable=False)  # type: ignore[arg-type]
    assert wal_salt(db) != salt
    await db.write(insert(2), durable=False)  # type: ignore[arg-type]
    assert on_loop == [False, False, True, True]  # the batch, the restart, the records
    assert await db.read(count) == 1102


@pytest.mark.parametrize("durable", [True, False])
async def test_statements_that_outgrow_the_cache_after_a_checkpoint_do_not_start_the_wal_over(
        db: SqliteDatabase, durable: bool) -> None:
    """A batch's statements write pages to the -wal file before its COMMIT once they
    outgrow SQLite's page cache (2 MiB); the first page written after a checkpoint started
    the file over, with its fsync, there on the loop (helper-71)."""
    await db.write(checkpointed)
    salts: list[bytes] = []

    def big(conn: sqlite3.Connection) -> None:
        salts.append(wal_salt(db))
        if durable:  # a submission of 3 MiB
            conn.execute("INSERT INTO t (v) VALUES (randomblob(3000000))")
        else:  # records of 1,100 pages
            conn.executemany("INSERT INTO t (v) VALUES (randomblob(4000))", [()] * 1100)
        salts.append(wal_salt(db))

    await db.write(big, durable=durable)
    assert salts[0] == salts[1]
    assert await db.read(count) == (1101 if durable else 2200)


class FailingOnce:
    """A connection whose next statement that starts with `prefix` fails (sqlite3's own
    connection takes no attributes)."""

    def __init__(self, conn: sqlite3.Connection, prefix: str) -> None:
        self.conn = conn
        self.prefix = prefix
        self.armed = True

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if self.armed and sql.startswith(self.prefix):
            self.armed = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


async def test_a_restart_that_fails_leaves_the_batch_to_run(db: SqliteDatabase) -> None:
    """The batch meets the fault itself, if it lasts, and fails named; here it has passed."""
    await db.write(checkpointed)
    failing = FailingOnce(db._connection(), "UPDATE heartbeat")  # a disk failing a write
    db._conn = failing  # type: ignore[assignment]
    assert await db.write(insert(1), durable=False) is not None  # type: ignore[arg-type]
    assert not failing.armed
    assert not failing.conn.in_transaction
    assert await db.read(count) == 1101


async def test_a_checkpoint_from_outside_before_a_batch_sends_its_commit_to_the_thread(
        db: SqliteDatabase) -> None:
    """An operator's checkpoint can copy the -wal file whole after the restart and before
    the batch begins: the batch's COMMIT then starts the file over (SQLite decides when a
    transaction begins), and is sent to the thread by the check before it."""
    await db.write(checkpointed)
    outside = sqlite3.connect(db.path, check_same_thread=False)  # run in the thread
    real_restart = db._restart_wal

    def restart_then_checkpoint() -> None:
        real_restart()
        outside.execute("PRAGMA wal_checkpoint(PASSIVE)")

    db._restart_wal = restart_then_checkpoint  # type: ignore[method-assign]
    try:
        on_loop = commits_by_thread(db._connection())
        salts: list[bytes] = []

        def small(conn: sqlite3.Connection) -> None:
            salts.append(wal_salt(db))
            conn.execute("INSERT INTO t (v) VALUES (2)")

        await db.write(small, durable=False)
        assert wal_salt(db) != salts[0]  # started over by its COMMIT
        await db.write(insert(3), durable=False)  # type: ignore[arg-type]
    finally:
        outside.close()
    assert on_loop == [False, False, True]  # the restart, the batch's, the next one's
    assert await db.read(count) == 1102


def traced_in_thread(conn: sqlite3.Connection) -> list[str]:
    """The statements the connection runs off the loop's thread from now on."""
    here = threading.get_ident()
    return traced(conn, lambda sql: sql if threading.get_ident() != here else None)


async def test_the_restart_runs_at_normal_and_the_durable_batch_after_it_at_full(
        db: SqliteDatabase) -> None:
    """The restart's own COMMIT needs no fsync: the durable batch's covers its row. At FULL
    the first durable write after a checkpoint waited for three (helper-73)."""
    await db.write(checkpointed)
    in_thread = traced_in_thread(db._connection())
    assert await db.write(synchronous) == 2
    assert [sql.split(" SET")[0] for sql in in_thread] == [
        "PRAGMA synchronous = 1", "BEGIN IMMEDIATE", "UPDATE heartbeat", "COMMIT",
        "PRAGMA synchronous = 2", "COMMIT"]
    assert await db.write(synchronous, durable=False) == 1
    assert await db.write(synchronous) == 2


@pytest.mark.parametrize("durable", [True, False])
async def test_a_restart_that_keeps_failing_is_tried_again_only_after_a_commit(
        db: SqliteDatabase, caplog: pytest.LogCaptureFixture, durable: bool) -> None:
    """An operator holds the write lock just after a checkpoint: each batch fails after
    SQLite's busy timeout, and did so twice, with a warning each, while its restart was
    tried before it every time (helper-73)."""
    await db.write(checkpointed)
    in_thread = traced_in_thread(db._connection())

    def restarts() -> int:
        return sum(sql.startswith("BEGIN") for sql in in_thread)

    blocker = sqlite3.connect(db.path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        for value in (1, 2, 3):
            with pytest.raises(StoreUnavailable):
                await db.write(insert(value), durable=False)  # type: ignore[arg-type]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert restarts() == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "starting the -wal file over failed; the writes go on without"]
    await db.write(insert(4), durable=durable)  # type: ignore[arg-type]
    await db.write(checkpointed)  # the restarts are back once a batch has committed
    await db.write(insert(5), durable=False)  # type: ignore[arg-type]
    assert restarts() == 2
    assert await db.read(count) == 2202


MiB = 1024 * 1024


def transactions(conn: sqlite3.Connection) -> list[list[str]]:
    """The INSERT statements the connection runs from now on, by transaction (a restart of
    the -wal file's makes an empty one)."""
    groups: list[list[str]] = []

    def keep(sql: str) -> bool | None:
        sql = sql.lstrip()
        if sql.startswith("BEGIN"):
            groups.append([])
        elif sql.startswith("INSERT"):
            groups[-1].append(sql)
        return None

    traced(conn, keep)
    return groups


async def test_a_batch_takes_writes_up_to_its_bytes_or_its_first(db: SqliteDatabase) -> None:
    """Its statements run on the event loop: 16 submissions of 5.9 MB in one batch held
    it 146-295 ms. The writes keep their order; one of no size joins the batch before."""
    groups = transactions(db._connection())
    sizes = [3 * MiB, 3 * MiB, 1 * MiB, 1 * MiB, 1 * MiB, 5 * MiB, 0, 0]
    await asyncio.gather(*(db.write(insert(value), size=size)  # type: ignore[arg-type]
                           for value, size in enumerate(sizes)))
    assert [[int(sql.rsplit("(", 1)[1].rstrip(")")) for sql in group]
            for group in groups if group] == [[0], [1, 2], [3, 4], [5, 6, 7]]
    assert await db.read(count) == 8


async def test_submissions_with_big_bodies_are_stored_a_few_to_a_batch(
        tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        store = SqliteStore(db)
        groups = transactions(db._connection())
        body = b'"' + b"x" * (MiB + MiB // 2) + b'"'
        created = await asyncio.gather(*(store.create_queued(
            make_message(f"m-{n}", body=body)) for n in range(5)))
        assert all(new for _, new in created)
        messages = [[sql for sql in group if "INTO messages" in sql]
                    for group in groups]
        assert [len(group) for group in messages if group] == [2, 2, 1]
        stored = await store.get(created[4][0].key)
        assert stored is not None
        assert stored.content.body == body
    finally:
        db.close()


async def test_a_claim_and_an_expiry_count_in_their_batch_s_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim reads up to 4 MiB of bodies and writes their starts in its write, an expiry
    frees up to 4 MiB of bodies in its: with no size, either joined a batch already at
    the bound (helper-74: 53 ms of the loop against 12); at the most it could free, every
    expiry took a commit of its own (helper-75)."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        sizes: list[int] = []
        real_write = db.write

        async def spied(fn: object, **kwargs: Any) -> object:
            sizes.append(kwargs.get("size", 0))
            return await real_write(fn, **kwargs)  # type: ignore[arg-type]

        store, queue = SqliteStore(db), SqliteQueue(db)
        body = b'"' + b"x" * MiB + b'"'
        for n in range(2):
            await store.create_queued(make_message(f"m-{n}", body=body))
        monkeypatch.setattr(db, "write", spied)
        claims = await queue.claim_started(10, 30.0, None, lambda m: m.start_attempt(NOW))
        assert len(claims) == 2
        assert sizes == [sizes[0]]
        assert 2 * MiB < sizes[0] < 2 * MiB + 8192  # the bodies and their documents
        cancelled = await store.create_queued(make_message("gone", body=body))
        await store.update(cancelled[0].cancel(NOW))  # final, and past the retention below
        sizes.clear()
        assert await store.expire(NOW + timedelta(days=1), 100) == 1
        assert sizes[-1] == MiB + 2  # the body it frees, read before its write
    finally:
        db.close()


async def test_a_change_of_level_that_fails_half_way_is_made_again(
        db: SqliteDatabase) -> None:
    """synchronous set to NORMAL, then the checkpoint setting failing, must not leave a
    durable batch believed FULL at NORMAL: a 202 without its fsync."""
    db._conn = FailingOnce(  # type: ignore[assignment]
        db._connection(), "PRAGMA wal_autocheckpoint")
    with pytest.raises(StoreUnavailable):
        await db.write(synchronous, durable=False)
    assert await db.write(synchronous) == 2
    assert await db.write(synchronous, durable=False) == 1
    assert await db.write(synchronous) == 2


@pytest.mark.parametrize("durable", [True, False])
async def test_a_batch_whose_commit_is_refused_fails_whole_and_the_next_lands(
        tmp_path: Path, durable: bool) -> None:
    """On the loop or in the thread: a COMMIT that fails (here a deferred foreign key,
    checked only then) rolls its batch back, fails every write of it, and gives the write
    turn back to the other process."""
    path = tmp_path / "shared.db"
    db = SqliteDatabase(path, shared=True)
    db.open()
    other = WriteTurn(Path(f"{path}.writer"))
    try:
        assert await run_refused_batch(db, durable) == [not durable]  # where it ran
        assert other.try_take()  # given back
        other.give()
        await db.write(insert(9), durable=durable)  # type: ignore[arg-type]
        assert await db.read(count) == 1
        assert await db.read(
            lambda conn: conn.execute("SELECT count(*) FROM c").fetchone()[0]) == 0
    finally:
        other.close()
        db.close()


async def run_refused_batch(db: SqliteDatabase, durable: bool) -> list[bool]:
    """A batch whose COMMIT fails, each of its writes failed; whether its COMMIT ran on
    the loop's thread."""
    await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER)"))
    await db.write(lambda conn: conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)"))
    await db.write(lambda conn: conn.execute(
        "CREATE TABLE c (p INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)"))
    on_loop = commits_by_thread(db._connection())
    orphan = asyncio.ensure_future(db.write(
        lambda conn: conn.execute("INSERT INTO c (p) VALUES (42)"), durable=durable))
    others = [asyncio.ensure_future(db.write(insert(i), durable=durable))  # type: ignore[arg-type]
              for i in range(3)]
    results = await asyncio.gather(orphan, *others, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    db._connection().set_trace_callback(None)
    return on_loop
