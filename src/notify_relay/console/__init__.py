"""The web console of the embedded server, at /console."""

from __future__ import annotations

from fastapi import FastAPI

from notify_relay.runtime import Runtime

__all__ = ["mount_console"]


def mount_console(app: FastAPI, rt: Runtime) -> None:
    """Serve the console when the runtime's store is SQLite (the embedded server).

    The AWS deployment has no console: its store is not SQLite, and the SQLite adapter is
    imported only when the store already comes from it, so the API Lambda never loads it.
    The console's read connection closes with the runtime.
    """
    if not type(rt.relay.store).__module__.startswith("notify_relay.adapters.sqlite."):
        return
    from notify_relay.adapters.sqlite.console import console_reads_of
    from notify_relay.console.router import console_router

    reads = console_reads_of(rt.relay.store)
    if reads is None:
        return
    rt.stops.append(reads.close)
    app.include_router(console_router(reads))
