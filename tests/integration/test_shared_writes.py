"""Two processes writing one file (`serve --processes 2`): each batch takes the write turn
in its committer thread, so a process whose turn has not come keeps its event loop running
and never meets SQLite's busy timeout, however long the other holds the file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, database
from notify_relay.adapters.sqlite.database import BUSY_TIMEOUT_MS, TURN_WAIT_SECONDS
from notify_relay.domain.errors import StoreUnavailable

pytestmark = pytest.mark.anyio
HOLD_SECONDS = 2.4 * BUSY_TIMEOUT_MS / 1000  # well past SQLite's busy timeout
assert HOLD_SECONDS < TURN_WAIT_SECONDS

OTHER_PROCESS = textwrap.dedent("""
    import asyncio, sys, time
    from notify_relay.adapters.sqlite import SqliteDatabase

    async def main() -> None:
        db = SqliteDatabase(sys.argv[1])
        db.attach()
        hold = float(sys.argv[2])

        def long_write(conn):
            conn.execute("INSERT INTO t (v, who) VALUES (-1, 'other')")
            print("holding", flush=True)
            time.sleep(hold)  # a write that keeps the file to itself this long

        await db.write(long_write)
        await asyncio.gather(*(db.write(lambda conn, i=i: conn.execute(
            "INSERT INTO t (v, who) VALUES (?, 'other')", (i,))) for i in range(300)))
        db.close()

    asyncio.run(main())
""")


def other_process_holding(path: Path, hold: float = HOLD_SECONDS) -> subprocess.Popen[str]:
    """Another process on the file, once it holds it (inside a long write)."""
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, str(path),
                              str(hold)], stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None
    assert other.stdout.readline().strip() == "holding"
    return other


async def exited(process: subprocess.Popen[str]) -> int:
    """Its exit status, while this loop keeps running (it may hold the turn the other
    process waits for, until the loop hands it back)."""
    deadline = time.monotonic() + 30
    while process.poll() is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    return process.returncode


def insert(value: int) -> Callable[[sqlite3.Connection], object]:
    return lambda conn: conn.execute("INSERT INTO t (v, who) VALUES (?, 'this')", (value,))


def count(who: str) -> object:
    return lambda conn: int(conn.execute("SELECT count(*) FROM t WHERE who = ?",
                                         (who,)).fetchone()[0])


@pytest.mark.parametrize("other_path", ["relay.db", "alias.db"])
async def test_a_process_waits_for_its_turn_without_blocking_its_loop(
        tmp_path: Path, other_path: str) -> None:
    """The other process may name the file through a symlink (alias.db): the turn is the
    real file's, or its writes would meet SQLite's busy timeout here (as below)."""
    db = SqliteDatabase(tmp_path / "relay.db", shared=True)
    (tmp_path / "alias.db").symlink_to("relay.db")
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER, who TEXT)"))
        other = other_process_holding(tmp_path / other_path)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        # these wait for the other's turn, then go in one batch; none fails as locked
        await asyncio.gather(*(db.write(insert(i)) for i in range(300)))
        waited = time.monotonic() - started
        ticker.cancel()
        assert await exited(other) == 0
        assert other.stdout is not None
        other.stdout.close()
        assert waited > HOLD_SECONDS / 2  # they did wait for the other process
        assert ticks > waited / 0.01 / 4  # and the loop ran meanwhile
        assert await db.read(count("this")) == 300  # type: ignore[arg-type]
        assert await db.read(count("other")) == 301  # type: ignore[arg-type]
    finally:
        db.close()


async def test_attach_refuses_a_file_of_another_schema(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("PRAGMA user_version = 999").connection.close()
    with pytest.raises(RuntimeError, match="schema version 999"):
        SqliteDatabase(path).attach()


async def test_without_turns_the_same_wait_fails_as_locked(tmp_path: Path) -> None:
    """What the turn is for: a writer that is not shared meets the busy timeout."""
    db = SqliteDatabase(tmp_path / "relay.db")
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER, who TEXT)"))
        other = other_process_holding(db.path)
        with pytest.raises(StoreUnavailable, match="locked"):
            await db.write(lambda conn: conn.execute("INSERT INTO t (v, who) VALUES (0, 'x')"))
        assert await exited(other) == 0
        assert other.stdout is not None
        other.stdout.close()
    finally:
        db.close()


async def test_a_process_stuck_with_the_turn_gets_503s_not_a_hang(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other process keeps the turn (stopped, say) well past TURN_WAIT_SECONDS: the writes
    waiting here fail as unavailable after that bound, the loop runs meanwhile, writes go
    through again once it lets go, and close() does not wait for it."""
    monkeypatch.setattr(database, "TURN_WAIT_SECONDS", 0.3)
    db = SqliteDatabase(tmp_path / "relay.db", shared=True)
    db.open()
    try:
        await db.write(lambda conn: conn.execute("CREATE TABLE t (v INTEGER, who TEXT)"))
        other = other_process_holding(db.path, hold=2.0)
        started = time.monotonic()
        results = await asyncio.gather(*(db.write(insert(i)) for i in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert time.monotonic() - started < 1.5  # the bound, not the other's 2 s
        assert await exited(other) == 0
        assert other.stdout is not None
        other.stdout.close()
        await db.write(insert(99))  # the turn is free again
        assert await db.read(count("this")) == 1  # type: ignore[arg-type]
        other = other_process_holding(db.path, hold=3.0)
        pending = asyncio.ensure_future(db.write(insert(100)))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        db.close()  # the pending write fails; close does not wait for the other's turn
        assert time.monotonic() - started < 1.0
        with pytest.raises(StoreUnavailable):
            await pending
        other.kill()
        other.wait()
        assert other.stdout is not None
        other.stdout.close()
    finally:
        db.close()
