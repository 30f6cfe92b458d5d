"""`notify-relay partner`: a local HTTP partner for trying things out.

    notify-relay partner --port 9000 --fail-rate 0.3
    notify-relay serve --allow-networks 127.0.0.0/8 &
    notify-relay messages submit --target http://127.0.0.1:9000/hook --json-body '{"a": 1}'
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import Any

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*")

PARTNER_HELP = """\
answers:
  /status/CODE      answers CODE (200-599), whatever the options
  any other path    --status CODE when given, else 503 at --fail-rate, else 200
  every answer waits --delay first

Each request is printed as one line: time, method, path, answer, a few headers (and
whether the signature is valid, with --secret), the first 200 characters of the body.
Ctrl-C or SIGTERM stops it (exit status 0).

exit status: 0 stopped; 1 cannot listen on the address; 2 usage error"""


def duration(text: str) -> float:
    """`2s`, `500ms`, `1m` or `1.5` (seconds)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 2s or 500ms")
    value = float(match[1])
    return value / 1000 if match[2] == "ms" else value * 60 if match[2] == "m" else value


def rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def status_code(text: str) -> int:
    if not text.isdigit() or not 200 <= int(text) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP status from 200 to 599")
    return int(text)


def port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number")
    return int(text)


def secret(text: str) -> str:
    from standardwebhooks import Webhook

    try:
        Webhook(text)
    except Exception:
        raise argparse.ArgumentTypeError("not a Standard Webhooks secret "
                                         "(whsec_ and base64)") from None
    return text


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "partner", help="run a local partner to send notifications to, for trying things out",
        description="A local HTTP partner that answers as told and prints every request.",
        epilog=PARTNER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="listen address [default 127.0.0.1]")
    parser.add_argument("--port", type=port, default=9000,
                        help="listen port; 0 picks a free one [default 9000]")
    parser.add_argument("--status", type=status_code, default=None, metavar="CODE",
                        help="always answer this status (a /status/CODE path still wins)")
    parser.add_argument("--fail-rate", type=rate, default=0.0, metavar="RATE",
                        help="answer 503 at this rate, 0 to 1 [default 0]")
    parser.add_argument("--delay", type=duration, default=0.0, metavar="DURATION",
                        help="wait this long before each answer: 2s, 500ms [default 0]")
    parser.add_argument("--secret", type=secret, default=None, metavar="whsec_...",
                        help="check each request's Standard Webhooks signature with it")
    parser.set_defaults(run=run)


def run(args: dict[str, Any]) -> int:
    # aiohttp is imported only by the command that serves with it
    from notify_relay.cli.partner_server import Behaviour, serve

    behaviour = Behaviour(status=args["status"], fail_rate=args["fail_rate"],
                          delay=args["delay"], secret=args["secret"])

    def ready(url: str) -> None:
        rules = [f"always {behaviour.status}" if behaviour.status is not None else
                 f"503 at rate {behaviour.fail_rate:g}, else 200" if behaviour.fail_rate else
                 "200", "/status/CODE answers CODE"]
        if behaviour.delay:
            rules.append(f"after {behaviour.delay:g}s")
        if behaviour.secret:
            rules.append("signatures checked")
        print(f"partner listening on {url} (answers {'; '.join(rules)}); Ctrl-C stops it",
              flush=True)

    try:
        asyncio.run(serve(args["host"], args["port"], behaviour, sys.stdout, ready))
    except OSError as exc:
        print(f"notify-relay: error: cannot listen on {args['host']}:{args['port']}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # where no signal handler could be installed
        pass
    print("partner stopped", flush=True)
    return 0


__all__ = ["register", "run"]
