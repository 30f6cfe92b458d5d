"""One SQLite file in WAL mode, written with group commit.

Every write is a small function. Writes issued while no commit is running are run
together (up to BATCH_BYTES of them) on the event loop's thread, each inside a savepoint
(replayable ones in a row share one: see write()), just after the loop's turn; their
COMMIT (the fsync) then runs in a thread of its own while the loop goes on, and the
writes issued meanwhile gather into the next batch, which starts when that commit ends.
Many concurrent requests share one fsync, each still learns its own result, and nobody's
`await` returns before its write is durable (against a power loss too, unless it is one of
delivery's records, which may wait for the next fsync: write()).

Handing every write to a writer thread and back cost more CPU, through the GIL, than it
saved (measured on this project's 2-core machine, bench/run.py); handing over only the
COMMIT, once a batch, frees the loop for the fsync (about 10 % of the loop's time under
load, by py-spy), which releases the GIL. A batch with no fsync to wait for (delivery's
records alone, synchronous NORMAL) commits on the loop: its COMMIT only copies its pages to
the -wal file, cheaper than the hand-over, which cost the delivering process 2-4 % of
its CPU. Such a COMMIT never checkpoints (wal_autocheckpoint 0 while NORMAL): the next
durable commit, in the thread, does. And the -wal file, once a checkpoint has copied all
of it, is started over (which fsyncs its new header) by a write of its own in the thread
before the next batch runs (_restart_wal): the loop waits for no fsync, unless an
operator's checkpoint (sqlite3's shell, say) lands just before a batch that spills.
Reads use a connection of their own, read-only: in WAL mode they never wait for the
writer, and see only committed data.

`serve` may run its API in a second process on the same file (bootstrap, embedded/). SQLite
takes one writer at a time, and a writer that finds the file locked polls with sleeps (the
busy handler) on the thread that asked: the event loop's. So with `shared=True` a batch
first takes the write turn (write_turn.py), an flock that the kernel hands to the next
process the moment it is released, and gives it back after its COMMIT. A process waiting
for its turn keeps serving; its writes gather into the batch that runs when the turn comes,
and fail (503) if it does not come within TURN_WAIT_SECONDS (the other process is stuck).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from notify_relay.adapters.sqlite.schema import MIGRATIONS, migrate
from notify_relay.adapters.sqlite.write_turn import WriteTurn
from notify_relay.domain.errors import StoreUnavailable

T = TypeVar("T")
# one pending write: what it runs, who awaits it, whether it must reach the disk (FULL),
# whether it may run twice (write()'s `replayable`), about how many bytes it writes
_Write = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool, bool, int]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]
FULL, NORMAL = 2, 1  # PRAGMA synchronous
UNSET = -1  # a change of the setting failed half-way: the next batch makes it again
BUSY_TIMEOUT_MS = 250
# replayable writes in a row that share one savepoint: it holds a copy of each page they
# change until its RELEASE, so a run is bounded (32 submissions of 64 KiB: about 5 MiB)
RUN_WRITES = 32
# A batch's statements run on the event loop: it takes pending writes up to this many
# bytes (by write()'s `size`), or its first whatever its size. Taking them all, 16
# submissions of 5.9 MB held the loop 146-295 ms a batch, 64 of 500 KB 52-72 ms, and
# every other request of the process waited; the bound is the claim's (CLAIM_BODY_BYTES).
# The price: a burst of big writes takes one commit (and, past 1,000 pages, a checkpoint
# and the -wal file's restart) a batch, so on a disk whose fsync is slow it is stored
# more slowly, and what waits behind it waits as long (helper-74: 20 ms COMMITs, 8 of
# 5.9 MB in 502-556 ms against 207-257)
BATCH_BYTES = 4 * 1024 * 1024
# the other process holds the write turn for a few ms a batch; this long, it is stuck
TURN_WAIT_SECONDS = 1.0
# ready only with room for the largest submission (6 MiB) and its WAL frames
READY_FREE_BYTES = 8 * 1024 * 1024
WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024
# SQLite's default: a durable COMMIT that leaves this many pages in the -wal file copies
# them to the database file, in the committer thread; a NORMAL one leaves them (_run)
AUTOCHECKPOINT_PAGES = 1000
# free pages kept for reuse, as a share of the file: a steady rate refills them each
# retention sweep, so giving them back would only make the file shrink and regrow
FREE_SLACK = 0.10
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental
RELEASE_STEP_PAGES = 256  # one short write (about 3 ms here) per MiB given back
PAGE_BYTES = 4096  # SQLite's default page size, which the file keeps
log = logging.getLogger("notify_relay.sqlite")


def _owner_only(path: Path) -> None:
    """Take group and other permissions away from a file an earlier version created 0644."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if mode & 0o077:
        path.chmod(mode & 0o700)
        log.warning("made a database file readable by its owner only",
                    extra={"path": str(path)})


class DatabaseLocked(RuntimeError):
    """Another notify-relay process is using this database file."""


class DatabaseCorrupt(RuntimeError):
    """The database file fails SQLite's integrity check."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # before anything is written: a new file can give freed pages back to the disk
    # (release_free_pages); on an existing file this is a no-op until a full VACUUM
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    # after a burst the -wal file is cut back to this when it restarts, not kept at its peak
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
    # FULL: a transaction is on disk before the API answers 202, power loss included
    conn.execute("PRAGMA synchronous = FULL")
    # another process holding the write lock (an operator's sqlite3 shell) makes a commit
    # wait this long on the event loop: short, then a 503 the caller retries
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _temp_in_memory(conn: sqlite3.Connection) -> None:
    """Each write runs in a savepoint, which copies every page it changes to a statement
    journal; past 64 KiB (one submission changes ~19 pages) SQLite spills it to a temporary
    file, which then grows through the whole batch: 37 write syscalls and 79 KB a
    submission, 13x the WAL's own. In memory it is emptied at each RELEASE (see write()).

    Set after the migrations, never before: temp_store = MEMORY holds sorts in memory too
    (SQLite's sorter never spills to a file then), and a migration that rewrites a table or
    builds an index on a big file would hold it all (a first-schema file of 150,000
    messages: 68 MiB more at open(), against 4)."""
    conn.execute("PRAGMA temp_store = MEMORY")


def _open_index(real_path: Path) -> int | None:
    """The -shm file, read by _wal_backfilled; None without one (not in WAL mode: then
    every COMMIT goes to the thread)."""
    try:
        return os.open(f"{real_path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return None


def _connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only = ON")  # reads only: every write goes through write()
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class SqliteDatabase:
    def __init__(self, path: str | os.PathLike[str], *, shared: bool = False) -> None:
        """`shared`: other processes of this server write to the file too (see above)."""
        self.path = Path(path)
        self._real_path = self.path  # resolved in open() and attach()
        self._shared = shared
        self._turn: WriteTurn | None = None
        self._awaiting_turn: concurrent.futures.Future[None] | None = None
        self._turn_timer: asyncio.TimerHandle | None = None
        self._lock_file: IO[bytes] | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._pending: list[_Write] = []
        self._synchronous = FULL  # the connection's setting now (_connect sets FULL)
        self._index: int | None = None  # the -shm file (_wal_backfilled)
        self._flush_scheduled = False
        # what a batch waits for now: the write turn, the -wal file's restart or its COMMIT
        # in _committer; none starts before it ends
        self._committing: concurrent.futures.Future[None] | None = None
        # the last restart of the -wal file failed, and no batch has committed in the
        # thread since (the next one to commit after a failed restart starts the file over,
        # so its COMMIT goes there): the batches do without one (a fault that lasts would
        # fail each twice, and log each)
        self._restart_failed = False
        self._committer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite-commit")

    def open(self) -> None:
        """Take the file's lock and migrate; raises DatabaseLocked.

        The files are readable by their owner only: they hold partners' Authorization
        values in clear. SQLite gives the -wal and -shm files the database file's mode.
        """
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        real = self._resolve()
        for path in (Path(f"{real}.lock"), Path(f"{real}.writer")):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for suffix in ("", "-wal", "-shm", ".lock"):
            _owner_only(Path(f"{real}{suffix}"))
        lock_file = open(f"{real}.lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise DatabaseLocked(f"{self.path} is in use by another notify-relay process") from None
        self._lock_file = lock_file
        self._conn = _connect(self.path)
        try:
            (verdict,) = self._conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            verdict = str(exc)
        if verdict != "ok":
            self.close()
            raise DatabaseCorrupt(f"{self.path} failed SQLite's quick_check: {verdict}; "
                                  "restore it from a backup (notify-relay backup)")
        migrate(self._conn)
        _temp_in_memory(self._conn)
        self._open_turns()
        self._reader = _connect_reader(self.path)
        self._index = _open_index(self._real_path)

    def attach(self) -> None:
        """Open a file that another process of this server opened (took its lock, checked and
        migrated) and holds open: the API process of `serve`. Always shared."""
        self._shared = True
        self._resolve()
        conn = _connect(self.path)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version != len(MIGRATIONS):
            conn.close()
            raise RuntimeError(f"{self.path} has schema version {version}, not "
                               f"{len(MIGRATIONS)}: it was not opened by this version")
        _temp_in_memory(conn)
        self._conn = conn
        self._open_turns()
        self._reader = _connect_reader(self.path)
        self._index = _open_index(self._real_path)

    def _resolve(self) -> Path:
        """The file's real path, which names its .lock and .writer: named from the path as
        given, a second server started through a symlink to the file took a lock of its own,
        released the first one's leases, and partners got messages twice. SQLite names the
        -wal and -shm after the real file too. A hard link is a second real path: no lock
        named from a path can see it."""
        self._real_path = Path(os.path.realpath(self.path))
        return self._real_path

    def _open_turns(self) -> None:
        if self._shared:
            self._turn = WriteTurn(Path(f"{self._real_path}.writer"))

    def close(self) -> None:
        held = False
        if self._committing is not None and self._committing is self._awaiting_turn:
            # given up; unless it came and _turn_taken has not run: then it is held here
            held = not self._committing.cancel() and self._committing.exception() is None
        elif self._committing is not None:  # its writers learn the outcome when the loop runs
            concurrent.futures.wait([self._committing])
        if self._turn_timer is not None:
            self._turn_timer.cancel()
        if self._pending and self._conn is not None:  # no loop to wait on: committed here
            batch, self._pending = self._pending, []
            if self._turn is None or held or self._turn.take_within(TURN_WAIT_SECONDS):
                try:
                    self._settle(self._run(batch, commit=True)[0])
                finally:
                    self._give_turn()
            else:
                self._settle(self._failed(batch, StoreUnavailable("no write turn")))
        elif held:
            self._give_turn()
        self._committer.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._index is not None:
            # last: closing any descriptor of the -shm drops this process's locks on it,
            # which told another process the wal-index is in use (helper-71: one that opened
            # the file then started it over under a connection still open here)
            os.close(self._index)
            self._index = None
        if self._turn is not None:  # its flock goes with it
            self._turn.close()
            self._turn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def write(self, fn: Callable[[sqlite3.Connection], T], *,
                    durable: bool = True, replayable: bool = False, size: int = 0) -> T:
        """Run `fn` in the next group commit; returns once that commit is durable (with
        `durable=False`: once it is in the -wal file).

        `durable=False`, for a record that may be lost with the machine's power but not with
        the process (an attempt's start and outcome: lost, the message is attempted again,
        with the same Idempotency-Key): a batch of such writes alone commits with
        synchronous NORMAL, no fsync at its COMMIT (run on the loop, with no checkpoint:
        see the module's docstring). It survives the process (WAL), and
        reaches the disk with the next durable commit, whose fsync of the -wal covers it
        (the worker's statistics, FULL, come within a second of an attempt), or the next
        checkpoint. A batch with any durable write commits with FULL.

        In its savepoint, an exception of `fn` undoes its changes alone. A savepoint keeps a
        copy of every page the write changes, in memory (_temp_in_memory): a write keeps to
        a few MiB of pages (retention's deletes of 500 bodies of 1 MiB copied 530 MiB, which
        is why expire() bounds its batch by size).

        `replayable`: `fn` gives the same result and changes when run again over the same
        data (no state of its own, no clock), and changes at most a few hundred KiB. Such
        writes in a row share one savepoint, RUN_WRITES at most; when one raises, all of
        them are undone and run again, each in its own. A savepoint a write cost a
        submission 5.5 us and an attempt's record 3.5 us of SQLite's CPU
        (statements and page copies), about 2 % of the server's CPU a message.

        `size`: about how many bytes `fn` writes (a body and a document), which bounds its
        batch (BATCH_BYTES); a write of a few KiB at most may leave it 0."""
        self._connection()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future, durable, replayable, size))
        if not self._flush_scheduled and self._committing is None:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            raise RuntimeError("database is not open")
        try:
            return fn(self._reader)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the database cannot be read now: {exc}") from exc

    async def check_writable(self) -> None:
        """Readiness: room for the largest submission, and a real commit (permissions,
        the write lock and the disk all hold)."""
        disk = os.statvfs(self._real_path.parent)  # not a symlink's
        free = disk.f_bavail * disk.f_frsize
        if free < READY_FREE_BYTES:
            raise StoreUnavailable(f"only {free // 1024} KiB free on the database's disk")
        now = time.time()
        await self.write(lambda conn: conn.execute(
            "UPDATE heartbeat SET at = ? WHERE id = 1", (now,)))

    async def release_free_pages(self) -> int:
        """Give the disk back what a retention sweep freed beyond the slack, in short
        writes between the others; returns the pages released (0 on a file created
        before incremental vacuum, which keeps reusing its free pages instead)."""
        def pragma(name: str) -> Callable[[sqlite3.Connection], int]:
            return lambda conn: int(conn.execute(f"PRAGMA {name}").fetchone()[0])

        if await self.read(pragma("auto_vacuum")) != INCREMENTAL:
            return 0
        released = 0
        while True:
            free = await self.read(pragma("freelist_count"))
            pages = await self.read(pragma("page_count"))
            excess = min(free - int(pages * FREE_SLACK), RELEASE_STEP_PAGES)
            if excess <= 0:
                return released

            def vacuum(conn: sqlite3.Connection, pages: int = excess) -> None:
                # Python's sqlite3 steps a PRAGMA once, and each step frees one page
                for _ in range(pages):
                    conn.execute("PRAGMA incremental_vacuum")

            await self.write(vacuum, size=excess * PAGE_BYTES)
            released += excess
            await asyncio.sleep(0)

    def _flush(self) -> None:
        """Runs the pending writes (up to BATCH_BYTES: _take) and commits them (in the
        committer thread when there is an fsync to wait for: _start, _start_batch); shared,
        first takes the write turn, or waits for it (see write_turn.py)."""
        self._flush_scheduled = False
        if self._committing is not None or not self._pending:
            return
        if self._turn is None or self._turn.try_take():
            self._start()
            return
        loop = asyncio.get_running_loop()
        waiting = self._awaiting_turn = self._committing = self._turn.wait()
        waiting.add_done_callback(lambda done: _call_soon(loop, self._turn_taken, done))
        self._turn_timer = loop.call_later(TURN_WAIT_SECONDS, self._turn_overdue, waiting)

    def _turn_overdue(self, waiting: concurrent.futures.Future[None]) -> None:
        """The other process has kept the turn too long: what waits now fails (503); the
        wait goes on, for what comes next."""
        if waiting.done() or waiting is not self._awaiting_turn:
            return
        batch, self._pending = self._pending, []
        self._settle(self._failed(batch, StoreUnavailable(
            f"another process of this server has held the database for over "
            f"{TURN_WAIT_SECONDS:g} s")))
        self._turn_timer = asyncio.get_running_loop().call_later(
            TURN_WAIT_SECONDS, self._turn_overdue, waiting)

    def _turn_taken(self, done: concurrent.futures.Future[None]) -> None:
        if done is not self._awaiting_turn or done.cancelled():
            return  # given up by close(); the turn, if it came, was given back
        self._committing = self._awaiting_turn = None
        if self._turn_timer is not None:
            self._turn_timer.cancel()
            self._turn_timer = None
        if self._conn is None:
            return
        error = done.exception()
        if error is not None:
            batch, self._pending = self._pending, []
            self._settle(self._failed(batch, error))
            self._next()
            return
        if not self._pending:  # all failed meanwhile (_turn_overdue)
            self._give_turn()
            return
        self._start()

    def _start(self) -> None:
        """Runs what is pending now (the writes that came while the turn was awaited too,
        up to BATCH_BYTES), once the -wal file is started over if it is due to be
        (_restart_wal)."""
        if self._index is not None and not self._restart_failed and self._wal_backfilled():
            self._hand_over(self._restart_wal, self._restarted)
            return
        self._start_batch()

    def _hand_over(self, work: Callable[[], None],
                   then: Callable[..., None], *args: Any) -> None:
        """`work` in the committer thread; then `then(done, *args)` on the loop."""
        loop = asyncio.get_running_loop()
        self._committing = self._committer.submit(work)
        self._committing.add_done_callback(lambda done: _call_soon(loop, then, done, *args))

    def _restart_wal(self) -> None:
        """In the committer thread: readiness's write (check_writable), so that the -wal
        file is started over here, with its new header's fsync, and not by the next batch
        on the loop: its COMMIT would go to the thread for that (_start_batch), but its
        statements write pages to the -wal file before their COMMIT as soon as they
        outgrow SQLite's page cache (2 MiB: a 3 MiB body, 1,100 pages of records), and
        the first of them started the file over there (helper-71). The value must change:
        SQLite leaves a page that a write leaves as it was out of the commit. At synchronous
        NORMAL: the header's fsync is all this is for; the next durable COMMIT's covers the
        row (at FULL, the first durable write after a checkpoint waited for three fsyncs,
        helper-73)."""
        conn = self._connection()
        level = self._synchronous
        if level != NORMAL:
            self._synchronous = UNSET  # until FULL is set back (else _run sets both again)
            conn.execute(f"PRAGMA synchronous = {NORMAL}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE heartbeat SET at = ? WHERE id = 1", (time.time(),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            if level == FULL:
                conn.execute(f"PRAGMA synchronous = {FULL}")
                self._synchronous = FULL

    def _restarted(self, done: concurrent.futures.Future[None]) -> None:
        self._committing = None
        if self._conn is None:  # closed meanwhile: close() ran what was pending
            return
        if (error := done.exception()) is not None:  # the batch runs: if the fault lasts, it
            self._restart_failed = True  # fails too, named; the restarts wait for a commit
            log.warning("starting the -wal file over failed; the writes go on without",
                        extra={"error": f"{type(error).__name__}: {error}"[:200]})
        self._start_batch()

    def _start_batch(self) -> None:
        batch = self._take()
        results, open_transaction = self._run(batch, commit=False)
        # an fsync to wait for: in the thread (not NORMAL is FULL: a failed change of level,
        # UNSET, raises before BEGIN, so no transaction is open then)
        if open_transaction and (self._synchronous != NORMAL or self._wal_backfilled()):
            self._hand_over(self._commit, self._committed, batch, results)
            return
        if open_transaction:  # NORMAL: no fsync, no checkpoint (see above): here
            try:
                self._connection().execute("COMMIT")
            except Exception as exc:
                results = self._failed(batch, exc)
        # else the batch failed and was rolled back
        self._give_turn()
        self._settle(results)
        self._next()

    def _take(self) -> list[_Write]:
        """The writes of the next batch, in their order: the pending ones up to BATCH_BYTES
        in all, or the first; the rest wait for the batch after it (_next)."""
        pending = self._pending
        total = 0
        for index, write in enumerate(pending):
            total += (size := write[4])
            if size and index and total > BATCH_BYTES:
                self._pending = pending[index:]
                return pending[:index]
        self._pending = []
        return pending

    def _give_turn(self) -> None:
        if self._turn is not None:
            self._turn.give()

    def _run(self, batch: list[_Write], *, commit: bool) -> tuple[list[_Result], bool]:
        """Each write of `batch` in its savepoint (replayable ones in a row in a shared one,
        see write()), in one transaction left open unless `commit`; a failure of the
        transaction itself rolls it back and fails them all. Returns the results and
        whether the transaction went through (open or committed)."""
        conn = self._connection()
        results: list[_Result] = []
        try:
            synchronous = FULL if any(durable for _, _, durable, *_ in batch) else NORMAL
            if synchronous != self._synchronous:  # not within a transaction
                self._synchronous = UNSET  # until both are set
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                checkpoint_at = AUTOCHECKPOINT_PAGES if synchronous == FULL else 0
                conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_at}")
                self._synchronous = synchronous
            conn.execute("BEGIN IMMEDIATE")
            start = 0
            while start < len(batch):
                end = start + 1
                while (end < len(batch) and end - start < RUN_WRITES
                       and batch[start][3] and batch[end][3]):
                    end += 1
                if end - start == 1 or not _together(conn, batch[start:end], results):
                    _each(conn, batch[start:end], results)
                start = end
            if commit:
                conn.execute("COMMIT")
        except Exception as exc:  # nobody's write is durable
            return self._failed(batch, exc), False
        return results, True

    def _wal_backfilled(self) -> bool:
        """Whether a checkpoint has copied every frame of the -wal file (or it has none):
        then the transaction's first frame starts it over, with a new header that SQLite
        fsyncs at any synchronous level but OFF (helper-70 saw it on the loop: p99 6 ms,
        up to 8.6 ms on an idle disk). Read from the wal-index's header in the -shm file
        (https://sqlite.org/walformat.html): mxFrame at byte 16, nBackfill at 96, both
        32-bit in the machine's byte order. Read with the write turn (_start), or in the
        open transaction with the write lock (_start_batch): no commit of this server's can
        add frames or checkpoint meanwhile; the transaction's own frames, if its statements
        spilled any, change neither field (only a COMMIT writes mxFrame), except a restart
        they made, which sets both to 0 (a hand-over to the thread for nothing). SQLite
        decides when a transaction begins whether it starts the file over. A checkpoint
        from outside (an operator's) that lands between the check before a batch and its
        BEGIN makes it do so: at its COMMIT, which the check before the COMMIT sends to the
        thread, or, should its statements spill, on the loop (helper-73); one that lands
        later makes the check say so for nothing (helper-71)."""
        if self._index is None:
            return True
        header = os.pread(self._index, 100, 0)
        return header[16:20] == header[96:100]

    def _failed(self, batch: list[_Write], exc: BaseException) -> list[_Result]:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        unavailable = StoreUnavailable(f"the database cannot take writes now: {exc}")
        return [(future, None, unavailable) for _, future, *_ in batch]

    def _commit(self) -> None:
        """In the committer thread: the loop's thread does not touch the connection until
        `_committed` runs."""
        self._connection().execute("COMMIT")
        self._give_turn()  # after a failure, once _committed has rolled back

    def _committed(self, done: concurrent.futures.Future[None], batch: list[_Write],
                   results: list[_Result]) -> None:
        self._committing = None
        error = done.exception()
        if error is not None:
            results = self._failed(batch, error)
            self._give_turn()
        else:
            self._restart_failed = False
        self._settle(results)
        self._next()

    def _next(self) -> None:
        if self._pending and not self._flush_scheduled and self._conn is not None:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _settle(results: list[_Result]) -> None:
        for future, result, error in results:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None],
               *args: Any) -> None:
    """From the committer or the write turn's thread: the loop may be closed by then
    (close() saw to what was pending)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _each(conn: sqlite3.Connection, writes: list[_Write], results: list[_Result]) -> None:
    """Each write in its own savepoint: one that raises is undone alone, and its caller gets
    the exception; an OperationalError (disk full, read-only, I/O) fails the batch."""
    for fn, future, *_ in writes:
        conn.execute("SAVEPOINT w")
        try:
            results.append((future, fn(conn), None))
            conn.execute("RELEASE w")
        except sqlite3.OperationalError:
            raise
        except Exception as exc:
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
            results.append((future, None, exc))


def _together(conn: sqlite3.Connection, writes: list[_Write], results: list[_Result]) -> bool:
    """Replayable writes in one savepoint; False, with all of them undone, when one raised
    (other than an OperationalError, which fails the batch): they are then run again by
    _each."""
    conn.execute("SAVEPOINT run")
    try:
        done = [(future, fn(conn), None) for fn, future, *_ in writes]
    except sqlite3.OperationalError:
        raise
    except Exception:
        conn.execute("ROLLBACK TO run")
        conn.execute("RELEASE run")
        return False
    conn.execute("RELEASE run")
    results.extend(done)
    return True


def backup(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> int:
    """Copy the database, WAL included, into `target` (a new file, owner only) with SQLite's
    online backup: consistent while a server writes to it. Returns the pages copied.

    The -wal file holds acknowledged messages not yet in the main file: copying only
    `relay.db`, or deleting its -wal after a crash, loses them. This copies all of it.

    The copy is written to `<target>.partial-<random>` beside it and takes the target's name
    only once whole and on disk: a backup killed part-way once left a half-written target
    that, restored, opened as a new, empty database. A killed one leaves the temporary."""
    target_path = Path(target)
    if os.path.lexists(target_path):  # before the copy; os.link below is what decides
        raise _taken(target_path)
    fd, name = tempfile.mkstemp(prefix=f"{target_path.name}.partial-",
                                dir=target_path.parent)  # 0600
    os.close(fd)
    partial = Path(name)
    try:
        with contextlib.closing(sqlite3.connect(Path(source))) as src, \
                contextlib.closing(sqlite3.connect(partial)) as dst:
            # nobody opens the temporary before it is whole: no journal; fsynced below
            dst.execute("PRAGMA journal_mode = OFF")
            dst.execute("PRAGMA synchronous = OFF")
            src.backup(dst)
            (pages,) = dst.execute("PRAGMA page_count").fetchone()
        _fsync(partial)
        _give_name(partial, target_path)
    finally:
        partial.unlink(missing_ok=True)
    _fsync(target_path.parent)
    return int(pages)


def _give_name(partial: Path, target: Path) -> None:
    """A link never replaces a file (rename would): a target made meanwhile is refused. A
    file system without hard links (FAT, some network ones) gets a rename after a check,
    where a target made in between would be replaced."""
    try:
        os.link(partial, target)
    except FileExistsError:
        raise _taken(target) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if os.path.lexists(target):
            raise _taken(target) from None
        os.rename(partial, target)


def _taken(target: Path) -> FileExistsError:
    return FileExistsError(f"{target} exists; choose a new file")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
