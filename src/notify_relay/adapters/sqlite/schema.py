"""Schema migrations, versioned in code: migration N takes PRAGMA user_version from N-1 to N."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sender_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        status TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        queued INTEGER NOT NULL,
        version INTEGER NOT NULL,
        doc BLOB NOT NULL,  -- the rest of the message, JSON in UTF-8
        UNIQUE (sender_id, message_id)
    );
    CREATE INDEX messages_by_sender_status ON messages (sender_id, status, seq);
    CREATE INDEX messages_unqueued ON messages (created_at)
        WHERE queued = 0 AND status = 'QUEUED';
    -- bodies live apart so that status updates do not rewrite up to 6 MiB each time
    CREATE TABLE bodies (
        seq INTEGER PRIMARY KEY REFERENCES messages (seq),
        body BLOB
    );
    CREATE TABLE queue (
        sender_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        visible_at REAL NOT NULL,
        receipt TEXT,
        PRIMARY KEY (sender_id, message_id)
    );
    CREATE INDEX queue_by_visible_at ON queue (visible_at);
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file is missing; returns the schema version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this notify-relay "
            f"({len(MIGRATIONS)}); upgrade notify-relay"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version - 1]}; PRAGMA user_version = {version}; COMMIT;"
        )
    return len(MIGRATIONS)
