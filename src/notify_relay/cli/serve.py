"""`notify-relay serve` and `backup`: the embedded server on its SQLite file."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys

from notify_relay import __version__
from notify_relay.config import ConfigError, add_arguments, load
from notify_relay.logs import configure_logging

log = logging.getLogger("notify_relay.cli")
# connections and requests in progress at once; beyond, uvicorn answers 503
MAX_CONNECTIONS = 2048


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_parser = commands.add_parser(
        "serve", help="run the API and the delivery worker on SQLite",
        description="Run the API and the delivery worker on one SQLite file. Every setting "
                    "is a flag and a NOTIFY_RELAY_* variable; the flag wins. Times take a "
                    "unit: 500ms, 30s, 1m, 2h, 7d (a plain number is seconds).")
    add_arguments(serve_parser)
    serve_parser.set_defaults(run=lambda args: serve(args))
    copy = commands.add_parser(
        "backup", help="copy the database (its -wal file included) into a new file, safely "
                       "while the server runs")
    copy.add_argument("--db", default=None, metavar="PATH",
                      help="the SQLite file [env NOTIFY_RELAY_DB; default ./notify-relay.db]")
    copy.add_argument("target", metavar="TARGET", help="a new file to write")
    copy.set_defaults(run=lambda args: backup_command(args["db"], args["target"]))


def backup_command(db: str | None, target: str) -> int:
    from notify_relay.adapters.sqlite.database import backup

    source = db or os.environ.get("NOTIFY_RELAY_DB") or "./notify-relay.db"
    if not os.path.exists(source):
        print(f"notify-relay: error: {source} does not exist", file=sys.stderr)
        return 1
    try:
        pages = backup(source, target)
    except (OSError, sqlite3.Error) as exc:
        print(f"notify-relay: error: backup of {source} to {target} failed: {exc}",
              file=sys.stderr)
        return 1
    print(f"backed up {source} to {target} ({pages} pages)")
    return 0


def serve(flags: dict[str, str | None]) -> int:
    # imported here: the other commands (a CLI over HTTP) start without the server's stack
    import uvicorn

    from notify_relay.adapters.sqlite import DatabaseLocked
    from notify_relay.api.app import create_app
    from notify_relay.api.guarded_protocol import guarded_protocol
    from notify_relay.bootstrap import build_embedded

    try:
        settings = load(flags)
    except ConfigError as exc:
        print(f"notify-relay: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    for name, file in (("api-keys-file", settings.api_keys_file),
                       ("signing-secrets-file", settings.signing_secrets_file)):
        if file is not None and file.others_can_read:
            log.warning("a file of secrets is readable by group or others: chmod 600 it",
                        extra={"setting": name, "path": str(file.path),
                               "mode": f"{file.mode:04o}"})
    if not settings.api_keys and not settings.loopback_only:
        log.warning("no API keys are configured and the server listens beyond loopback: "
                    "anyone who can reach it can submit", extra={"host": settings.host})
    try:
        runtime = build_embedded(settings)
    except (DatabaseLocked, sqlite3.Error, OSError, RuntimeError) as exc:
        print(f"notify-relay: error: cannot open {settings.db}: {exc}", file=sys.stderr)
        return 1
    server = uvicorn.Server(uvicorn.Config(
        create_app(runtime, listen_host=settings.host, freeze_at_start=True),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.access_log,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(round(settings.shutdown_grace), 1),
        http=guarded_protocol(settings.head_timeout, settings.request_timeout),
        limit_concurrency=MAX_CONNECTIONS,
    ))
    log.info("starting", extra={**settings.summary(), "version": __version__})
    # uvicorn restores the handlers it found once it has shut down, then raises the signal
    # again: with these in place that ends here, and a clean stop exits 0 (contract v1.1)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda number, frame: None)
    server.run()
    return 0 if server.started else 1
