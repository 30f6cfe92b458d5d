"""Every statement the SQLite adapters run is served by an index, for its filter and its
order, so that its cost follows what it returns, not how much is stored.

Checked with EXPLAIN QUERY PLAN on a file the server itself migrated: an index that a
migration drops or a query that stops matching it fails here, not in production at a
million rows (where a list without its index took 655 ms on the event loop).
"""

from __future__ import annotations

import re
import sqlite3

import pytest

from notify_relay.adapters.sqlite import SqliteDatabase, queries
from notify_relay.adapters.sqlite.console import _list_query

# statements that read a whole (small or one-off) table, each with its reason
WHOLE_TABLE_ALLOWED = {
    "ACTIVE_DESTINATIONS": "once at start: one row per destination, never per message",
    "DEPTH": "queue_destinations: one row per destination with work",
    "RECOVER": "once at start, before serving: the leases a killed process left",
}
BIG_TABLES = ("messages", "bodies", "queue")


def statements() -> dict[str, str]:
    return {name: value for name, value in vars(queries).items()
            if name.isupper() and isinstance(value, str)
            and re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT)", value)}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path = tmp_path_factory.mktemp("plans") / "relay.db"
    db = SqliteDatabase(path)
    db.open()  # the schema exactly as a server migrates it
    db.close()
    return sqlite3.connect(path)


def plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    names = set(re.findall(r":(\w+)", sql))
    params: dict[str, object] | tuple[object, ...] = (
        dict.fromkeys(names, "x") if names else ("x",) * sql.count("?"))
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_the_statements_are_found() -> None:
    # the check below must not pass by checking nothing
    assert {"LIST_MESSAGES", "LIST_MESSAGES_IN_STATUS", "FAILED_BETWEEN", "GET_MESSAGE",
            "DUE_ENTRIES", "EXPIRED_MESSAGES", "PENDING"} <= set(statements())


@pytest.mark.parametrize("name", sorted(statements()))
def test_statement_uses_an_index_for_filter_and_order(conn: sqlite3.Connection,
                                                      name: str) -> None:
    steps = plan(conn, statements()[name])
    assert not [s for s in steps if "TEMP B-TREE" in s], f"{name} sorts: {steps}"
    if name in WHOLE_TABLE_ALLOWED:
        return
    scans = [s for s in steps
             if re.match(r"SCAN (\w+)", s) and s.split()[1] in (*BIG_TABLES, "m", "b")]
    assert not scans, f"{name} reads a whole table: {steps}"


def test_whole_table_exceptions_are_still_needed(conn: sqlite3.Connection) -> None:
    """An allowance that no longer applies is removed, not kept as a blind spot."""
    for name in WHOLE_TABLE_ALLOWED:
        assert any(s.startswith("SCAN") for s in plan(conn, statements()[name])), name


@pytest.mark.parametrize(("name", "expected_index"), [
    ("LIST_MESSAGES", "messages_by_sender"),
    ("LIST_MESSAGES_IN_STATUS", "messages_by_sender_status"),
    ("PENDING", "messages_pending_by_destination"),
    ("FAILED_BETWEEN", "messages_by_sender_status_updated"),
    ("EXPIRED_MESSAGES", "messages_final_by_updated"),
    ("DUE_ENTRIES", "queue_by_visible_at"),
    ("DUE_MESSAGES", "queue_by_visible_at"),
    ("DUE_MESSAGES_OF_DESTINATION", "queue_by_destination"),
])
def test_hot_reads_use_their_own_index(conn: sqlite3.Connection, name: str,
                                       expected_index: str) -> None:
    steps = plan(conn, statements()[name])
    assert any(f"INDEX {expected_index} " in f"{s} " for s in steps), steps


@pytest.mark.parametrize("filters", [(), ("status",), ("destination",), ("before",),
                                     ("status", "before"), ("destination", "before")])
def test_console_lists_read_in_index_order(conn: sqlite3.Connection,
                                           filters: tuple[str, ...]) -> None:
    params: dict[str, object] = {name: "x" for name in filters} | {"sender": "s", "limit": 5}
    steps = plan(conn, _list_query(params, "created"))
    assert not [s for s in steps if "TEMP B-TREE" in s or s.startswith("SCAN")], steps


@pytest.mark.parametrize("status", ["QUEUED", "RETRYING", "DELIVERED", "FAILED", "CANCELLED"])
@pytest.mark.parametrize("filters", [("since",), ("until",), ("since", "until"),
                                     ("destination", "since", "until")])
def test_console_lists_by_when_messages_changed_search_that_index(
        conn: sqlite3.Connection, status: str, filters: tuple[str, ...]) -> None:
    """A list of one status by when its messages last changed (replay's preview of FAILED
    ones, say) searches messages_by_sender_status_updated by time, rather than reading the
    sender's whole history of that status (a partial index tried once lost this: 0.2 ->
    57 ms with 200,000 messages stored)."""
    params: dict[str, object] = ({name: "x" for name in filters}
                                 | {"sender": "s", "status": status, "limit": 5})
    steps = plan(conn, _list_query(params, "updated"))
    assert any("INDEX messages_by_sender_status_updated" in s and "updated_at" in s
               for s in steps), steps


def test_partial_indexes_list_no_values_with_in(conn: sqlite3.Connection) -> None:
    """SQLite builds a temporary table for an IN list in a partial index's WHERE each time a
    statement that maintains the index runs: every insert and every status change paid for
    two of them (a message's writes 62-63 -> 46-48 us with OR instead, bench/sql_writes.py)."""
    partial = {name: sql for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'")}
    assert {"messages_pending_by_destination", "messages_final_by_updated"} <= partial.keys()
    with_in = {name: sql for name, sql in partial.items()
               if re.search(r"\bIN\s*\(", sql.split("WHERE", 1)[1], re.IGNORECASE)}
    assert not with_in, with_in
