"""SQLite adapters: one WAL file holds both the message store and the work queue."""

from notify_relay.adapters.sqlite.database import DatabaseLocked, SqliteDatabase
from notify_relay.adapters.sqlite.destinations import SqliteDestinationStore
from notify_relay.adapters.sqlite.queue import SqliteQueue
from notify_relay.adapters.sqlite.store import SqliteStore

__all__ = [
    "DatabaseLocked",
    "SqliteDatabase",
    "SqliteDestinationStore",
    "SqliteQueue",
    "SqliteStore",
]
