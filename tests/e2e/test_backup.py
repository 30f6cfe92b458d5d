"""`notify-relay backup` copies a running server's database, WAL included, safely."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notify_relay.adapters.sqlite.database import backup as copy_database
from tests.e2e.api_client import Api, ServerProcess
from tests.partner import Partner


def test_backup_of_a_running_server_restores_every_message(tmp_path: Path,
                                                           partner: Partner) -> None:
    db, copy = tmp_path / "relay.db", tmp_path / "copy.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8") as server:
        api = Api(server.base_url)
        assert api.patch_destination("held", {"paused": True}).status_code == 200
        for i in range(20):
            body = {"messageId": f"b-{i}", "targetUrl": partner.url("/ok")}
            if i % 2:
                body["destination"] = "held"  # these stay QUEUED, in the WAL
            assert api.submit(body).status_code == 202
        api.wait_for("b-0", {"DELIVERED"})
        result = subprocess.run(
            [sys.executable, "-m", "notify_relay.cli", "backup", "--db", str(db), str(copy)],
            capture_output=True, text=True, timeout=60, check=False)
        api.close()
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    # the copy alone (no -wal beside it) is the whole database
    assert not Path(f"{copy}-wal").exists() or Path(f"{copy}-wal").stat().st_size == 0
    with ServerProcess(copy, "--allow-networks", "127.0.0.0/8") as restored:
        api = Api(restored.base_url)
        statuses = {api.get(f"b-{i}").json()["status"] for i in range(1, 20, 2)}
        held = api.destination("held").json()
        api.close()
    assert statuses == {"QUEUED"}
    assert (held["paused"], held["pending"]) == (True, 10)


def backup(db: Path, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notify_relay.cli", "backup", "--db", str(db), str(target)],
        capture_output=True, text=True, timeout=60, check=False)


def test_backup_refuses_to_overwrite_or_invent(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"keep me")
    refused = backup(source, existing)
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    assert existing.read_bytes() == b"keep me"
    missing = backup(tmp_path / "none.db", tmp_path / "new.db")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


def test_a_killed_backup_leaves_nothing_under_its_name(tmp_path: Path) -> None:
    """A backup killed part-way once left the target half-written: restored, it opened as
    an empty database, and the server took it for a new one. Now only a finished, durable
    copy gets the target's name; a killed one leaves a temporary beside it."""
    source, target = tmp_path / "source.db", tmp_path / "copy.db"
    with sqlite3.connect(source) as conn:  # 64 MiB: copied and synced in over 0.1 s here
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, b BLOB)")
        conn.execute("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
                     "WHERE n < 1024) INSERT INTO t SELECT n, randomblob(65536) FROM s")
    conn.close()
    copying = subprocess.Popen(
        [sys.executable, "-m", "notify_relay.cli", "backup", "--db", str(source), str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not any(p.stat().st_size > 0 for p in tmp_path.iterdir()
                  if not p.name.startswith("source.db")):
        assert time.monotonic() < deadline
        assert copying.poll() is None  # the copy takes longer than this wait
        time.sleep(0.002)
    copying.send_signal(signal.SIGKILL)
    assert copying.wait() == -signal.SIGKILL  # it was still copying
    assert not os.path.lexists(target)
    # what it left is named for what it is (README: Operating the database)
    assert all(p.name.startswith("copy.db.partial-") for p in tmp_path.iterdir()
               if not p.name.startswith("source.db"))

    finished = backup(source, target)
    assert finished.returncode == 0, finished.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    rows = "SELECT count(*), sum(length(b)), max(n) FROM t"
    with sqlite3.connect(source) as a, sqlite3.connect(target) as b:
        assert b.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert b.execute(rows).fetchone() == a.execute(rows).fetchone() == (1024, 1 << 26, 1024)
        last = "SELECT b FROM t WHERE n = 1024"
        assert b.execute(last).fetchone() == a.execute(last).fetchone()
    a.close()
    b.close()


def _small_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    conn.close()


def test_backup_onto_a_file_system_without_hard_links(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """FAT and some network file systems refuse link(): the copy then takes its name by a
    rename (it failed with EPERM)."""
    source, copy = tmp_path / "relay.db", tmp_path / "copy.db"
    _small_database(source)

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    copy_database(source, copy)
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)
    conn.close()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_a_target_made_during_the_backup_is_not_replaced(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source, copy = tmp_path / "relay.db", tmp_path / "copy.db"
    _small_database(source)
    link = os.link

    def someone_was_first(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"theirs")
        link(src, dst)

    monkeypatch.setattr(os, "link", someone_was_first)
    with pytest.raises(FileExistsError, match="exists; choose a new file"):
        copy_database(source, copy)
    assert copy.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
