"""What every command that talks to a running server shares: its options, its client,
its exit statuses and the one-line error report."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeAlias

from notify_relay.cli.http_client import DEFAULT_TIMEOUT, DEFAULT_URL, ApiError, RelayClient
from notify_relay.cli.output import error_line
from notify_relay.config import parse_duration

OK = 0
REFUSED = 1  # the server answered 4xx
USAGE = 2  # argparse's own status for a bad command line
UNAVAILABLE = 3  # no answer, a timeout, or 5xx

EXIT_STATUSES = """\
exit status:
  0  success
  1  the server refused the request (4xx: NOT_FOUND, INVALID_STATE, UNAUTHENTICATED, ...)
  2  usage error: a bad option or argument
  3  the server could not be reached, did not answer in time, or failed (5xx)

environment: NOTIFY_RELAY_URL, NOTIFY_RELAY_API_KEY, NOTIFY_RELAY_SENDER
(an option given on the command line wins)"""



class UsageError(Exception):
    """A command line that parsed but cannot be used: exit status 2."""


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[RelayClient, dict[str, Any]], int]


def base_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text


def positive(text: str) -> float:
    """A positive time in seconds, written as serve's settings are: `30s`, `2h`, `5`."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive time")
    return value


def count(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    parse.__name__ = "number"
    return parse


def _options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument("--url", type=base_url, default=None, metavar="URL",
                       help=f"the server [env NOTIFY_RELAY_URL; default {DEFAULT_URL}]")
    group.add_argument("--api-key", default=None, metavar="KEY",
                       help="sent as Authorization: Bearer KEY [env NOTIFY_RELAY_API_KEY]")
    group.add_argument("--sender", default=None, metavar="ID",
                       help="the senderId, for a server without API keys "
                            "[env NOTIFY_RELAY_SENDER; default: the server's, 'default']")
    group.add_argument("--timeout", type=positive, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help=f"give up on an answer after this long [default {DEFAULT_TIMEOUT:g}]")
    group.add_argument("--json", action="store_true",
                       help="print the API's JSON as it is, for scripts")
    return common


def add_command(commands: Subparsers, name: str, run: Run, *, help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with the server options, the exit statuses in its --help, and `run`
    called with a client of the server once the command line is parsed."""
    parser = commands.add_parser(name, help=help, description=description or help,
                                 parents=[_options()], epilog=EXIT_STATUSES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=lambda args: call(run, args))
    return parser


def client_of(args: dict[str, Any]) -> RelayClient:
    url = args.pop("url", None) or os.environ.get("NOTIFY_RELAY_URL") or DEFAULT_URL
    try:
        url = base_url(url)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"NOTIFY_RELAY_URL: {exc}") from None
    return RelayClient(
        url,
        api_key=args.pop("api_key", None) or os.environ.get("NOTIFY_RELAY_API_KEY") or None,
        sender=args.pop("sender", None) or os.environ.get("NOTIFY_RELAY_SENDER") or None,
        timeout=args.pop("timeout", None) or DEFAULT_TIMEOUT,
    )


def call(run: Run, args: dict[str, Any]) -> int:
    """Run a command; a refusal is exit 1, no answer or a server failure exit 3."""
    try:
        with client_of(args) as client:
            status = run(client, args)
        sys.stdout.flush()
        return status
    except UsageError as error:
        print(f"notify-relay: error: {error}", file=sys.stderr)
        return USAGE
    except ApiError as error:
        return report(error)
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        # an answer of the right outline whose insides are not the API's
        print(f"notify-relay: error: the server's answer is not notify-relay's API "
              f"({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
        return UNAVAILABLE
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK


def report(error: ApiError) -> int:
    """Print the one-line error; its exit status."""
    print(error_line(error), file=sys.stderr)
    return REFUSED if error.refused else UNAVAILABLE


__all__ = ["EXIT_STATUSES", "OK", "REFUSED", "UNAVAILABLE", "USAGE", "Subparsers", "UsageError",
           "add_command", "call", "client_of", "count", "positive", "report"]
