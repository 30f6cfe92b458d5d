"""A database written by the first schema opens with the current one, and loses nothing."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from notify_relay.adapters.codec import message_to_doc
from notify_relay.adapters.sqlite import (
    SqliteDatabase,
    SqliteDestinationStore,
    SqliteQueue,
    SqliteStore,
)
from notify_relay.adapters.sqlite.schema import MIGRATIONS
from notify_relay.domain.destination import DestinationKey
from notify_relay.domain.message import MessageKey
from tests.factories import make_message

pytestmark = pytest.mark.anyio


def write_version_1(path: Path) -> None:
    """Two queued messages as the first release stored them: no destination anywhere."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    for message_id, url in (("m-1", "https://api.partner.example/hook"),
                            ("m-2", "http://127.0.0.1:9000/x")):
        message = make_message(message_id, "s", url=url)
        doc = dict(message_to_doc(message))
        del doc["destination"]
        (seq,) = conn.execute(
            "INSERT INTO messages (sender_id, message_id, status, fingerprint, created_at, "
            "updated_at, queued, version, doc) VALUES (?, ?, 'QUEUED', ?, ?, ?, 1, 1, ?) "
            "RETURNING seq",
            ("s", message_id, message.fingerprint, message.created_at.isoformat(),
             message.updated_at.isoformat(), orjson.dumps(doc))).fetchone()
        conn.execute("INSERT INTO bodies (seq, body) VALUES (?, ?)", (seq, message.content.body))
        conn.execute("INSERT INTO queue (sender_id, message_id, visible_at) VALUES (?, ?, 0)",
                     ("s", message_id))
    conn.close()


async def test_version_1_database_gains_destinations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_version_1(path)
    db = SqliteDatabase(path)
    db.open()
    try:
        message = await SqliteStore(db).get(MessageKey("s", "m-1"))
        assert message is not None
        assert message.destination == "api.partner.example:443"
        destinations = SqliteDestinationStore(db)
        names = [d.key.name for d in (await destinations.list("s", None, 10, None)).items]
        assert names == ["127.0.0.1:9000", "api.partner.example:443"]
        assert await destinations.pending(DestinationKey("s", "127.0.0.1:9000")) == 1
        claims = await SqliteQueue(db).claim(10, 30, lambda key: 1)
        assert sorted(c.destination or "" for c in claims) == names
    finally:
        db.close()


def write_version_6(path: Path) -> None:
    """One message in each status, stored by version 6 (its partial indexes with IN)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("destination_of", 1, lambda doc: "", deterministic=True)  # migration 2
    for version, migration in enumerate(MIGRATIONS[:6], start=1):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {version}; COMMIT;")
    for status in ("QUEUED", "DELIVERING", "RETRYING", "DELIVERED", "FAILED", "CANCELLED"):
        message_id = f"m-{status.lower()}"
        message = make_message(message_id, "s", url="http://127.0.0.1:9000/x")
        conn.execute(
            "INSERT INTO messages (sender_id, message_id, status, fingerprint, created_at, "
            "updated_at, queued, version, doc, destination) VALUES (?, ?, ?, ?, ?, ?, 1, 1, ?, ?)",
            ("s", message_id, status, message.fingerprint, message.created_at.isoformat(),
             message.updated_at.isoformat(), orjson.dumps(message_to_doc(message)),
             message.destination))
    conn.close()


async def test_version_6_database_keeps_its_counts_through_migration_7(tmp_path: Path) -> None:
    """Migration 7 re-creates the indexes of pending and of final messages (OR for IN): on
    a file that already holds messages, both still count and expire exactly those."""
    path = tmp_path / "old.db"
    write_version_6(path)
    db = SqliteDatabase(path)
    db.open()
    try:
        indexes = await db.read(lambda conn: dict(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN "
            "('messages_pending_by_destination', 'messages_final_by_updated')").fetchall()))
        assert len(indexes) == 2
        assert not [sql for sql in indexes.values() if " IN " in sql.upper()], indexes
        key = DestinationKey("s", "127.0.0.1:9000")
        assert await SqliteDestinationStore(db).pending(key) == 3
        later = datetime.fromisoformat("2100-01-01T00:00:00+00:00")
        assert await SqliteStore(db).expire(later, 10) == 3
        assert await SqliteDestinationStore(db).pending(key) == 3
    finally:
        db.close()
