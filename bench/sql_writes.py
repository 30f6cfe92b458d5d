"""The SQLite statements of one message's life, CPU a message, on the schema as migrated.

    .venv/bin/python bench/sql_writes.py [--stored N] [--messages M] [--rounds R]

A submission's writes (message, body, destination, queue entry), a claim's (lease, read,
QUEUED -> DELIVERING) and a settle's (DELIVERED, entry gone), 64 messages a transaction,
on a file that already holds N delivered messages; synchronous OFF, so that only CPU is
measured. The reference, in the same run: the same file with the partial indexes of
pending and final messages as schema version 6 had them, their statuses in an IN list
(migration 7 lists them with OR). Rounds alternate the two, because this machine's speed
moves from one minute to the next.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

from notify_relay.adapters.codec import message_to_doc
from notify_relay.adapters.sqlite import SqliteDatabase, queries
from notify_relay.domain.message import BodyKind, Content, Message, MessageKey
from notify_relay.domain.retry import RetryPolicy

BATCH = 64
DESTINATION = "127.0.0.1:9000"
STAMP = "2026-12-06T07:00:00.000000+00:00"
VERSION_6_INDEXES = (
    "DROP INDEX messages_pending_by_destination",
    "CREATE INDEX messages_pending_by_destination ON messages (sender_id, destination) "
    "WHERE status IN ('QUEUED', 'DELIVERING', 'RETRYING')",
    "DROP INDEX messages_final_by_updated",
    "CREATE INDEX messages_final_by_updated ON messages (updated_at) "
    "WHERE status IN ('DELIVERED', 'FAILED', 'CANCELLED')",
)


def a_doc() -> bytes:
    content = Content(f"http://{DESTINATION}/hook", "POST", (), b'{"n":1}', BodyKind.JSON)
    message = Message.new(MessageKey("s", "m"), content, correlation_id="c" * 32,
                          policy=RetryPolicy(10, 1.0, 3600.0), timeout_seconds=10.0,
                          now=datetime.fromisoformat(STAMP))
    return orjson.dumps(message_to_doc(message))


def create(path: Path, version_6: bool) -> sqlite3.Connection:
    db = SqliteDatabase(path)
    db.open()  # the schema exactly as a server migrates it
    db.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA foreign_keys = ON")
    for statement in VERSION_6_INDEXES if version_6 else ():
        conn.execute(statement)
    return conn


def lives(conn: sqlite3.Connection, doc: bytes, first: int, count: int) -> dict[str, float]:
    """`count` messages submitted, claimed and settled; CPU seconds by step."""
    spent = dict.fromkeys(("submit", "claim", "settle"), 0.0)
    now = time.time()
    for start in range(first, first + count, BATCH):
        began = time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        for i in range(start, min(start + BATCH, first + count)):
            inserted = conn.execute(queries.INSERT_MESSAGE, (
                "s", f"bench-{i}", "QUEUED", "f" * 64, STAMP, STAMP, 1, doc, DESTINATION))
            conn.execute(queries.INSERT_BODY, (inserted.lastrowid, b'{"n":1}'))
            conn.execute(queries.ENSURE_DESTINATION, ("s", DESTINATION))
            conn.execute(queries.ENQUEUE, ("s", f"bench-{i}", now - 1, DESTINATION))
        conn.execute("COMMIT")
        submitted = time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(queries.DUE_DESTINATIONS, (now,)).fetchall()
        due = conn.execute(queries.DUE_ENTRIES_OF_DESTINATION,
                           ("s", DESTINATION, now, BATCH)).fetchall()
        receipts = [secrets.token_hex(8) for _ in due]
        conn.executemany(queries.LEASE, [(now + 60, receipt, row[0])
                                         for row, receipt in zip(due, receipts, strict=True)])
        for _, sender, message_id, _ in due:
            version = conn.execute(queries.GET_MESSAGE, (sender, message_id)).fetchone()[8]
            conn.execute(queries.UPDATE_MESSAGE, ("DELIVERING", STAMP, 1, doc, sender,
                                                  message_id, version))
        conn.execute("COMMIT")
        claimed = time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        for (_, sender, message_id, _), receipt in zip(due, receipts, strict=True):
            conn.execute(queries.UPDATE_MESSAGE, ("DELIVERED", STAMP, 1, doc, sender,
                                                  message_id, 2))
            conn.execute(queries.COMPLETE, (sender, message_id, receipt))
        conn.execute("COMMIT")
        settled = time.process_time()
        spent["submit"] += submitted - began
        spent["claim"] += claimed - submitted
        spent["settle"] += settled - claimed
    return spent


def measure(stored: int, messages: int, version_6: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = create(Path(tmp) / "relay.db", version_6)
        doc = a_doc()
        lives(conn, doc, 0, stored)
        spent = lives(conn, doc, stored, messages)
        conn.close()
    return {step: seconds / messages * 1e6 for step, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=int, default=60_000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        for label, version_6 in (("IN (version 6)", True), ("OR (version 7)", False)):
            us = measure(args.stored, args.messages, version_6)
            steps = "  ".join(f"{step} {value:5.1f}" for step, value in us.items())
            print(f"round {round_}  {label:22} {steps}  all {sum(us.values()):5.1f} us "
                  "a message", flush=True)


if __name__ == "__main__":
    main()
