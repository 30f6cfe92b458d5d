"""`notify-relay`: one command; each subcommand's module registers its own parser.

`serve` and `backup` work on the SQLite file; the others talk to a running server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from notify_relay import __version__
from notify_relay.cli import destinations, messages, partner, serve

# each module's register(subparsers) adds its commands with set_defaults(run=...)
_MODULES = (serve, messages, destinations, partner)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notify-relay",
                                     description="Reliable delivery of HTTP notifications.")
    parser.add_argument("--version", action="version", version=f"notify-relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in _MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    args.pop("command")
    run: Callable[[dict[str, Any]], int] = args.pop("run")
    return run(args)


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
