"""How `serve` runs uvicorn: on the port (the API), or on the owner's Unix socket."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

import uvicorn

from notify_relay.api.guarded_protocol import guarded_protocol
from notify_relay.config import Settings

# connections and requests in progress at once; beyond, a 503 (api/guarded_protocol.py)
MAX_CONNECTIONS = 2048


def uvicorn_config(app: Any, settings: Settings, *, uds: str | None = None) -> uvicorn.Config:
    where: dict[str, Any] = {"uds": uds} if uds else {"host": settings.host,
                                                       "port": settings.port}
    return uvicorn.Config(
        app,
        **where,
        log_config=None,
        access_log=settings.access_log,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(round(settings.shutdown_grace), 1),
        http=guarded_protocol(settings.head_timeout, settings.request_timeout),
        limit_concurrency=MAX_CONNECTIONS,
    )


def quiet_stop_signals() -> None:
    """uvicorn restores the handlers it found once it has shut down, then raises the signal
    again: with these in place that ends there, and a clean stop exits 0 (contract v1.1)."""
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: None)


class Server(uvicorn.Server):
    """uvicorn's server, with an event set once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    async def serve_until_listening(self) -> asyncio.Task[None]:
        """Serve in a task; returns it once listening, or once it ended (failed start)."""
        serving = asyncio.create_task(self.serve())
        listening = asyncio.create_task(self.listening.wait())
        await asyncio.wait([serving, listening], return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        return serving
