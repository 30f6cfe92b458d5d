"""The database files hold partners' credentials in clear: owner only, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, SqliteStore
from tests.factories import make_message

pytestmark = pytest.mark.anyio


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_new_database_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = SqliteDatabase(tmp_path / "relay.db")
        db.open()
        await SqliteStore(db).create(make_message())  # writes the WAL
        modes = {p.name: mode(p) for p in tmp_path.iterdir()}  # noqa: ASYNC240
        db.close()
    finally:
        os.umask(old)
    assert set(modes) >= {"relay.db", "relay.db-wal", "relay.db-shm", "relay.db.lock"}
    assert modes == dict.fromkeys(modes, 0o600)


async def test_files_an_earlier_version_left_readable_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = SqliteDatabase(path)
    db.open()
    db.close()
    path.chmod(0o644)
    db = SqliteDatabase(path)
    db.open()
    db.close()
    assert mode(path) == 0o600
