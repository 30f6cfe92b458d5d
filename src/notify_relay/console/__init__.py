"""The web console of the embedded server, at /console."""

from __future__ import annotations

from fastapi import FastAPI

from notify_relay.runtime import Runtime

__all__ = ["mount_console"]


def mount_console(app: FastAPI, rt: Runtime) -> None:
    """Serve the console when the runtime has its reads (the embedded server: bootstrap
    builds them on the SQLite file; the AWS deployment has no console)."""
    if rt.console is None:
        return
    from fastapi.responses import RedirectResponse

    from notify_relay.console.router import console_router

    app.include_router(console_router(rt.console))

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        """A person who opens the server's address finds the console."""
        return RedirectResponse("/console", status_code=307)
