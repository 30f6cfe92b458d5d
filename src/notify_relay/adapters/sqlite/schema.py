"""Schema migrations, versioned in code: migration N takes PRAGMA user_version from N-1 to N."""

from __future__ import annotations

import sqlite3

import orjson

from notify_relay.domain.destination import default_destination

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
    # 2: destinations. Each queue entry names its destination; queue_destinations, kept by
    # triggers, holds each destination's earliest visible entry and its entry count, so a
    # claim finds the destinations with due work without reading their backlogs.
    """
    ALTER TABLE messages ADD COLUMN destination TEXT NOT NULL DEFAULT '';
    UPDATE messages SET destination = destination_of(doc);
    -- a destination's pending messages, counted without reading its history
    CREATE INDEX messages_pending_by_destination ON messages (sender_id, destination)
        WHERE status IN ('QUEUED', 'DELIVERING', 'RETRYING');
    ALTER TABLE queue ADD COLUMN destination TEXT NOT NULL DEFAULT '';
    UPDATE queue SET destination = coalesce((
        SELECT destination_of(m.doc) FROM messages m
        WHERE m.sender_id = queue.sender_id AND m.message_id = queue.message_id), '');
    CREATE INDEX queue_by_destination ON queue (sender_id, destination, visible_at);
    CREATE TABLE queue_destinations (
        sender_id TEXT NOT NULL,
        destination TEXT NOT NULL,
        next_visible REAL NOT NULL,
        entries INTEGER NOT NULL,
        PRIMARY KEY (sender_id, destination)
    ) WITHOUT ROWID;
    CREATE INDEX queue_destinations_by_next ON queue_destinations (next_visible);
    INSERT INTO queue_destinations
        SELECT sender_id, destination, min(visible_at), count(*) FROM queue GROUP BY 1, 2;
    CREATE TRIGGER queue_insert AFTER INSERT ON queue BEGIN
        INSERT INTO queue_destinations VALUES (NEW.sender_id, NEW.destination, NEW.visible_at, 1)
        ON CONFLICT (sender_id, destination) DO UPDATE SET
            next_visible = min(next_visible, excluded.next_visible), entries = entries + 1;
    END;
    CREATE TRIGGER queue_update AFTER UPDATE OF visible_at ON queue BEGIN
        UPDATE queue_destinations SET next_visible = (
            SELECT min(visible_at) FROM queue
            WHERE sender_id = NEW.sender_id AND destination = NEW.destination)
        WHERE sender_id = NEW.sender_id AND destination = NEW.destination;
    END;
    CREATE TRIGGER queue_delete AFTER DELETE ON queue BEGIN
        DELETE FROM queue_destinations
        WHERE sender_id = OLD.sender_id AND destination = OLD.destination AND entries <= 1;
        UPDATE queue_destinations SET entries = entries - 1, next_visible = (
            SELECT min(visible_at) FROM queue
            WHERE sender_id = OLD.sender_id AND destination = OLD.destination)
        WHERE sender_id = OLD.sender_id AND destination = OLD.destination;
    END;
    -- one row per destination that has had messages or settings; doc: its state, JSON
    CREATE TABLE destinations (
        sender_id TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'CLOSED',
        version INTEGER NOT NULL DEFAULT 0,
        doc BLOB,
        PRIMARY KEY (sender_id, name)
    ) WITHOUT ROWID;
    CREATE INDEX destinations_by_state ON destinations (sender_id, state, name);
    INSERT OR IGNORE INTO destinations (sender_id, name)
        SELECT sender_id, destination FROM messages;
    """,
    # 3: a row that /readyz rewrites: ready means a write can commit
    """
    CREATE TABLE heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
    INSERT INTO heartbeat VALUES (1, 0);
    """,
    # 4: reads by when a message last changed (replay's failure window, the console's
    # activity) and by destination, each served by an index
    """
    CREATE INDEX messages_by_sender_status_updated ON messages (sender_id, status, updated_at);
    CREATE INDEX messages_by_sender_destination ON messages (sender_id, destination, seq);
    """,
    # 5: retention finds the oldest final messages of every sender without a scan
    """
    CREATE INDEX messages_final_by_updated ON messages (updated_at)
        WHERE status IN ('DELIVERED', 'FAILED', 'CANCELLED');
    """,
    # 6: a sender's messages newest first, with no status given, in index order
    """
    CREATE INDEX messages_by_sender ON messages (sender_id, seq);
    """,
    # 7: the partial indexes of pending and of final messages name their statuses with OR,
    # not IN: SQLite builds a temporary table for an IN list each time a statement that
    # maintains the index runs, every insert and every status change (a message's writes
    # took 62-63 -> 46-48 us in SQLite, bench/sql_writes.py). A query must repeat the same
    # OR for the planner to take the index (test_sqlite_query_plans.py checks it does)
    """
    DROP INDEX messages_pending_by_destination;
    CREATE INDEX messages_pending_by_destination ON messages (sender_id, destination)
        WHERE status = 'QUEUED' OR status = 'DELIVERING' OR status = 'RETRYING';
    DROP INDEX messages_final_by_updated;
    CREATE INDEX messages_final_by_updated ON messages (updated_at)
        WHERE status = 'DELIVERED' OR status = 'FAILED' OR status = 'CANCELLED';
    """,
)


def _destination_of(doc: bytes) -> str:
    """The destination of a message stored before destinations existed."""
    return default_destination(orjson.loads(doc)["url"])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file is missing; returns the schema version."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this notify-relay "
            f"({len(MIGRATIONS)}); upgrade notify-relay"
        )
    conn.create_function("destination_of", 1, _destination_of, deterministic=True)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[version - 1]}; PRAGMA user_version = {version}; COMMIT;"
        )
    return len(MIGRATIONS)
