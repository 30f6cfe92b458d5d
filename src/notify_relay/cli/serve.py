"""`notify-relay serve` and `backup`: the embedded server on its SQLite file."""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from notify_relay import __version__
from notify_relay.config import ConfigError, Settings, add_arguments, load, unknown_variables
from notify_relay.embedded.api_child import ApiChild, spawn
from notify_relay.logs import configure_logging

log = logging.getLogger("notify_relay.cli")


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
    try:
        settings = load(flags)
    except ConfigError as exc:
        print(f"notify-relay: error: {exc}", file=sys.stderr)
        return 2
    two = settings.process_count == 2
    if not two:
        return _serve(settings, None)
    # the API process imports its stack while this one does (api_child.py)
    try:
        first = spawn()
    except OSError as exc:  # out of processes, of files
        print(f"notify-relay: error: cannot start the API process: {exc}", file=sys.stderr)
        return 1
    try:
        return _serve(settings, first)
    finally:
        # not given its settings (a stop came first, the file was locked): killed; given
        # them, it has stopped by now
        first.discard()


def _serve(settings: Settings, early: ApiChild | None) -> int:
    """`early`: two processes, and the API process started for them."""
    # imported here: the other commands (a CLI over HTTP) start without the server's stack
    from notify_relay.adapters.sqlite import DatabaseLocked
    from notify_relay.api.app import create_app
    from notify_relay.bootstrap import build_embedded
    from notify_relay.embedded.server import Server, uvicorn_config
    from notify_relay.embedded.supervisor import serve_two_processes
    from notify_relay.worker.wakeup import WakeUp

    configure_logging(settings.log_level)
    for name, closest in unknown_variables():  # the name only: a value may be a secret
        log.warning("an environment variable that no setting reads: ignored",
                    extra={"variable": name, "didYouMean": closest})
    for name, file in (("api-keys-file", settings.api_keys_file),
                       ("signing-secrets-file", settings.signing_secrets_file)):
        if file is not None and file.others_can_read:
            log.warning("a file of secrets is readable by group or others: chmod 600 it",
                        extra={"setting": name, "path": str(file.path),
                               "mode": f"{file.mode:04o}"})
    if not settings.api_keys and not settings.loopback_only:
        log.warning("no API keys are configured and the server listens beyond loopback: "
                    "anyone who can reach it can submit", extra={"host": settings.host})
    wakeup = WakeUp()
    try:
        runtime = build_embedded(settings, shared=early is not None, wakeup=wakeup)
    except (DatabaseLocked, sqlite3.Error, OSError, RuntimeError) as exc:
        print(f"notify-relay: error: cannot open {settings.db}: {exc}", file=sys.stderr)
        return 1
    log.info("starting", extra={**settings.summary(), "version": __version__})
    if early is not None:
        return serve_two_processes(settings, runtime, wakeup, early)
    server = Server(uvicorn_config(
        create_app(runtime, listen_host=settings.host, freeze_at_start=True), settings),
        runtime.hurries)
    server.run()
    return 0 if server.started else 1
