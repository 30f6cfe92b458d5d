"""One SQLite file in WAL mode: a single writer thread with group commit, pooled readers.

Every write is a small function run by the writer thread inside a savepoint; the writer
takes all writes waiting at that moment and commits them in one transaction, so many
concurrent requests share one fsync while each still learns its own result.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from notify_relay.adapters.sqlite.schema import migrate

T = TypeVar("T")
MAX_BATCH = 512


class DatabaseLocked(RuntimeError):
    """Another notify-relay process is using this database file."""


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a transaction is on disk before the API answers 202, power loss included
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class SqliteDatabase:
    def __init__(self, path: str | os.PathLike[str], readers: int = 2) -> None:
        self.path = Path(path)
        self._readers = readers
        self._lock_file: IO[bytes] | None = None
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        """Take the file's lock, migrate, start the writer; raises DatabaseLocked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(f"{self.path}.lock", "ab")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise DatabaseLocked(f"{self.path} is in use by another notify-relay process") from None
        self._lock_file = lock_file
        conn = _connect(self.path)
        migrate(conn)
        self._writer_conn = conn
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-read")
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-write", daemon=True)
        self._writer.start()

    def close(self) -> None:
        if self._writer is not None:
            self._writes.put(None)
            self._writer.join()
            self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in self._reader_conns:
            conn.close()
        self._reader_conns.clear()
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group commit; returns once that commit is durable."""
        if self._writer is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writes.put(_Write(fn, future, loop))
        return await future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._read, fn)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._reader_conns.append(conn)
        return fn(conn)

    def _write_loop(self) -> None:
        conn = self._writer_conn
        if conn is None:
            return
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(conn, batch)
            if stop:
                return

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Write]) -> None:
        results: list[tuple[_Write, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                conn.execute("SAVEPOINT w")
                try:
                    results.append((item, item.fn(conn), None))
                    conn.execute("RELEASE w")
                except Exception as exc:  # the caller gets it; the batch goes on
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((item, None, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # the commit failed: nobody's write is durable
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(item, None, exc) for item in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Write, Any, BaseException | None]]]
        by_loop = {}
        for row in results:
            by_loop.setdefault(row[0].loop, []).append(row)
        for loop, rows in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop closed; its callers are gone
                loop.call_soon_threadsafe(_settle, rows)


def _settle(rows: list[tuple[_Write, Any, BaseException | None]]) -> None:
    for item, result, error in rows:
        if item.future.done():
            continue
        if error is None:
            item.future.set_result(result)
        else:
            item.future.set_exception(error)
