"""`notify-relay`: one command; each subcommand's module registers its own parser.

`serve` and `backup` work on the SQLite file; the others talk to a running server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from notify_relay import __version__
from notify_relay.embedded import stop_signals


def _parser() -> argparse.ArgumentParser:
    # imported here, after main() holds a server's stop signals (they take half a second)
    from notify_relay.cli import destinations, messages, partner, serve

    parser = argparse.ArgumentParser(prog="notify-relay",
                                     description="Reliable delivery of HTTP notifications.")
    parser.add_argument("--version", action="version", version=f"notify-relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    # each module's register(subparsers) adds its commands with set_defaults(run=...)
    for module in (serve, messages, destinations, partner):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    serving = list(sys.argv[1:2] if argv is None else argv[:1]) == ["serve"]
    if serving:
        stop_signals.hold()  # a stop while it starts is a clean stop once it has started
    try:
        args = vars(_parser().parse_args(argv))
        args.pop("command")
        run: Callable[[dict[str, Any]], int] = args.pop("run")
        return run(args)
    finally:
        if serving:
            stop_signals.ignore()  # stopped: a signal now would spoil the exit status


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
