"""What a SQLite connection runs, as its trace callback sees each statement."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def traced(conn: sqlite3.Connection, keep: Callable[[str], T | None]) -> list[T]:
    """From now on, `keep(sql)` of each statement the connection runs, where it is not None
    (run on the thread that runs the statement)."""
    seen: list[T] = []

    def trace(sql: str) -> None:
        if (kept := keep(sql)) is not None:
            seen.append(kept)

    conn.set_trace_callback(trace)
    return seen


def savepoints(conn: sqlite3.Connection) -> list[str]:
    return traced(conn, lambda sql: sql if sql.startswith("SAVEPOINT") else None)
