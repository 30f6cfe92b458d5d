"""`notify-relay messages ...`: list, show, submit, retry, cancel and replay messages on a
running server, over its HTTP API."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from notify_relay.cli.http_client import ApiError, RelayClient
from notify_relay.cli.output import (
    clean,
    duration_ms,
    fields,
    indent,
    print_json,
    print_list,
    table,
)
from notify_relay.cli.remote import (
    OK,
    UNAVAILABLE,
    Subparsers,
    UsageError,
    add_command,
    count,
    positive,
    report,
)

STATUSES = ("QUEUED", "DELIVERING", "RETRYING", "DELIVERED", "FAILED", "CANCELLED")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def register(commands: Subparsers) -> None:
    group = commands.add_parser(
        "messages", help="list, show, submit, retry, cancel or replay messages on a server",
        description="Messages on a running server, over its HTTP API.")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = add_command(actions, "list", list_messages,
                          help="the sender's messages, newest first")
    listing.add_argument("--status", type=str.upper, choices=STATUSES, default=None,
                         help="only messages in this status")
    listing.add_argument("--limit", type=count(1, 1_000_000), default=50, metavar="N",
                         help="at most N messages [default 50]")
    listing.add_argument("--all", action="store_true",
                         help="every message, following the pages to the end")
    listing.add_argument("--cursor", default=None, help="start at this nextCursor")

    show = add_command(actions, "show", show_message,
                       help="one message with its attempts and the partner's answers")
    show.add_argument("message_id", metavar="ID")

    submit = add_command(
        actions, "submit", submit_message, help="submit a notification; prints its id",
        description="Submit a notification. Its id (a new UUID unless --id) is printed; "
                    "submitting again with the same --id is always safe.")
    submit.add_argument("--target", required=True, metavar="URL", help="where to send it")
    submit.add_argument("--method", type=str.upper, choices=METHODS, default=None,
                        help="[default POST]")
    submit.add_argument("--header", action="append", type=header, default=[],
                        metavar="'NAME: VALUE'", dest="headers",
                        help="a request header; may be given again")
    body = submit.add_mutually_exclusive_group()
    body.add_argument("--body", default=None, metavar="TEXT", help="a text body")
    body.add_argument("--json-body", type=json_value, default=None, metavar="JSON",
                      help="a JSON body, sent as application/json")
    body.add_argument("--body-file", default=None, metavar="PATH",
                      help="the body from a UTF-8 file ('-': standard input)")
    submit.add_argument("--id", default=None, dest="message_id",
                        help="the messageId, the idempotency key [default: a new UUID]")
    submit.add_argument("--destination", default=None, metavar="NAME",
                        help="the destination [default: the target's host:port]")
    submit.add_argument("--max-attempts", type=count(1, 100), default=None, metavar="N",
                        help="attempts before it fails [default: the server's, 12]")
    submit.add_argument("--initial-delay", type=positive, default=None, metavar="TIME",
                        help="the first retry's delay")
    submit.add_argument("--max-delay", type=positive, default=None, metavar="TIME",
                        help="the longest retry delay")
    submit.add_argument("--attempt-timeout", type=positive, default=None, metavar="TIME",
                        help="each attempt's timeout")
    add_wait(submit)

    retry = add_command(actions, "retry", retry_message,
                        help="send a FAILED or CANCELLED message again")
    retry.add_argument("message_id", metavar="ID")
    add_wait(retry)

    cancel = add_command(actions, "cancel", cancel_message,
                         help="stop a QUEUED or RETRYING message")
    cancel.add_argument("message_id", metavar="ID")

    replay = add_command(actions, "replay", replay_messages,
                         help="retry FAILED messages by hand, in one call",
                         description="Retry by hand the sender's FAILED messages that match "
                                     "(times bound when they failed).")
    replay.add_argument("--destination", default=None, metavar="NAME",
                        help="only this destination's (host:port, or the name given at submit)")
    replay.add_argument("--since", default=None, metavar="TIME", help="RFC 3339")
    replay.add_argument("--until", default=None, metavar="TIME", help="RFC 3339")
    replay.add_argument("--limit", type=count(1, 10_000), default=None, metavar="N",
                        help="at most N messages [server default 1000]")


WAITING = ("QUEUED", "DELIVERING")
WAIT_POLL_SECONDS = 0.2


def add_wait(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--wait", type=positive, nargs="?", const=30.0, default=None, metavar="TIME",
        help="then wait, up to TIME [30s], for the attempt's outcome (DELIVERED, "
             "RETRYING, FAILED) and print it; exit 3 if none came in time")


def wait_for_outcome(client: RelayClient, message_id: str, attempts_before: int,
                     timeout: float) -> dict[str, Any] | None:
    """The message once an attempt after `attempts_before` has an outcome (or it ended
    otherwise, cancelled say); None when `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        m = client.get_message(message_id)
        if m.get("status") not in WAITING and (m.get("attemptCount", 0) > attempts_before
                                               or m.get("status") == "CANCELLED"):
            return m
        if time.monotonic() >= deadline:
            return None
        time.sleep(WAIT_POLL_SECONDS)


def print_outcome(client: RelayClient, message_id: str, attempts_before: int,
                  args: dict[str, Any]) -> int:
    """For --wait: the outcome as one line (or the message as JSON)."""
    m = wait_for_outcome(client, message_id, attempts_before, args["wait"])
    if m is None:
        print(f"notify-relay: {clean(message_id)}: no outcome within {args['wait']:g} s; "
              f"see: notify-relay messages show {clean(message_id)}", file=sys.stderr)
        return UNAVAILABLE
    if args["json"]:
        print_json(m)
        return OK
    line = f"{clean(m.get('messageId'))}: {clean(m.get('status'))}"
    last = (m.get("attempts") or [{}])[-1]
    if last.get("statusCode") is not None or last.get("error"):
        line += f" (attempt {clean(last.get('number'))}: " + clean(
            f"HTTP {last['statusCode']}" if last.get("statusCode") is not None
            else last.get("error")) + ")"
    print(line)
    return OK


def header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not 'Name: value'")
    return name.strip(), value.strip()


def json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


# list

MESSAGE_COLUMNS = ("id", "status", "attempts", "destination", "updated", "last error")


def message_row(m: dict[str, Any]) -> list[object]:
    return [m.get("messageId"), m.get("status"), m.get("attemptCount"), m.get("destination"),
            m.get("updatedAt"), m.get("lastError")]


def list_messages(client: RelayClient, args: dict[str, Any]) -> int:
    print_list(client.list_messages, args, noun="messages", columns=MESSAGE_COLUMNS,
               row=message_row, status=args["status"])
    return OK


# show

ATTEMPT_COLUMNS = ("#", "started", "duration", "status", "outcome", "error")


def message_fields(m: dict[str, Any]) -> str:
    budget = clean(m.get("maxAttempts"))
    pairs: list[tuple[str, object]] = [
        ("id", m.get("messageId")),
        ("sender", m.get("senderId")),
        ("status", m.get("status")),
        ("target", f"{m.get('method')} {m.get('targetUrl')}"),
        ("destination", m.get("destination")),
        ("correlation id", m.get("correlationId")),
        ("created", m.get("createdAt")),
        ("updated", m.get("updatedAt")),
        ("next attempt", m.get("nextAttemptAt")),
        ("delivered", m.get("deliveredAt")),
        ("attempts", f"{m.get('attemptCount')} of at most {budget}"),
        ("last status code", m.get("lastStatusCode")),
        ("last error", m.get("lastError")),
    ]
    if m.get("timestamp"):
        pairs.insert(6, ("event time", m["timestamp"]))
    headers = m.get("headers")
    if headers:
        pairs.append(("headers", "; ".join(f"{k}: {v}" for k, v in headers.items())))
    if "callback" in m:
        callback = m["callback"]
        pairs.append(("callback", EMPTY_CALLBACK if callback is None else
                      f"{callback.get('status')}, {callback.get('attemptCount')} attempts"
                      + (f", last error {callback['lastError']}"
                         if callback.get("lastError") else "")))
    return fields(pairs)


EMPTY_CALLBACK = "not due yet"


def attempt_row(a: dict[str, Any]) -> list[object]:
    return [a.get("number"), a.get("startedAt"), duration_ms(a.get("durationMs")),
            a.get("statusCode"), a.get("outcome"), a.get("error")]


def response_block(a: dict[str, Any]) -> str | None:
    """The partner's answer to one attempt (contract v1.1), when one came."""
    response = a.get("response")
    if not isinstance(response, dict):
        return None
    headers = response.get("headers") or {}
    head = ", ".join(f"{k}: {v}" for k, v in headers.items())
    lines = [f"attempt {clean(a.get('number'))}: {clean(a.get('statusCode'))}"
             + (f" ({clean(head)})" if head else "")]
    body = response.get("body")
    if body:
        lines.append(indent(clean(body, keep_lines=True).rstrip("\n"), "  | "))
    else:
        lines.append("  (no body)")
    if response.get("bodyTruncated"):
        lines.append("  | … (cut after the first 1,024 bytes)")
    return "\n".join(lines)


def show_message(client: RelayClient, args: dict[str, Any]) -> int:
    m = client.get_message(args["message_id"])
    if args["json"]:
        print_json(m)
        return OK
    print(message_fields(m))
    attempts = m.get("attempts") or []
    if attempts:
        print()
        print(table(ATTEMPT_COLUMNS, [attempt_row(a) for a in attempts], max_width=80))
        answers = [block for a in attempts if (block := response_block(a)) is not None]
        if answers:
            print()
            print("partner's answers:")
            print("\n".join(answers))
    return OK


# submit

def _body(args: dict[str, Any]) -> tuple[bool, Any]:
    if args["body"] is not None:
        return True, args["body"]
    if args["json_body"] is not None:
        return True, args["json_body"]
    path = args["body_file"]
    if path is None:
        return False, None
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        return True, data.decode("utf-8")
    except OSError as exc:
        raise UsageError(f"--body-file: {exc.strerror or exc}: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"--body-file: {path} is not UTF-8 text") from None


def submission_of(args: dict[str, Any]) -> dict[str, Any]:
    has_body, body = _body(args)
    submission: dict[str, Any] = {"messageId": args["message_id"] or str(uuid.uuid4()),
                                  "targetUrl": args["target"]}
    if args["method"]:
        submission["method"] = args["method"]
    if args["headers"]:
        submission["headers"] = dict(args["headers"])
    if has_body:
        submission["body"] = body
    policy = {name: args[key] for name, key in (("maxAttempts", "max_attempts"),
                                                ("initialDelaySeconds", "initial_delay"),
                                                ("maxDelaySeconds", "max_delay"))
              if args[key] is not None}
    if policy:
        submission["retryPolicy"] = policy
    for name, key in (("destination", "destination"), ("timeoutSeconds", "attempt_timeout")):
        if args[key] is not None:
            submission[name] = args[key]
    return submission


def submit_message(client: RelayClient, args: dict[str, Any]) -> int:
    submission = submission_of(args)
    message_id = submission["messageId"]
    try:
        accepted = client.submit(submission)
    except ApiError as error:
        status = report(error)
        if not error.refused:
            # stored or not, the same id makes a second try safe: it is the idempotency key
            print(f"notify-relay: submitting again with --id {clean(message_id)} is safe",
                  file=sys.stderr)
        return status
    if args["wait"] is not None:
        return print_outcome(client, message_id, 0, args)
    if args["json"]:
        print_json(accepted)
        return OK
    print(accepted.get("messageId", message_id))
    if accepted.get("duplicate"):
        print(f"notify-relay: {clean(message_id)} was already accepted; nothing new was stored "
              f"(status {clean(accepted.get('status'))})", file=sys.stderr)
    return OK


# retry, cancel, replay

def retry_message(client: RelayClient, args: dict[str, Any]) -> int:
    m = client.retry(args["message_id"])
    if args["wait"] is not None:
        return print_outcome(client, args["message_id"], int(m.get("attemptCount", 0)), args)
    if args["json"]:
        print_json(m)
    else:
        print(f"{clean(m.get('messageId'))}: {clean(m.get('status'))} "
              f"({clean(m.get('attemptCount'))} attempts so far, "
              f"at most {clean(m.get('maxAttempts'))})")
    return OK


def cancel_message(client: RelayClient, args: dict[str, Any]) -> int:
    m = client.cancel(args["message_id"])
    if args["json"]:
        print_json(m)
    else:
        print(f"{clean(m.get('messageId'))}: {clean(m.get('status'))}")
    return OK


def replay_messages(client: RelayClient, args: dict[str, Any]) -> int:
    result = client.replay(destination=args["destination"], since=args["since"],
                           until=args["until"], limit=args["limit"])
    if args["json"]:
        print_json(result)
        return OK
    replayed = result.get("replayed")
    print(f"replayed {clean(replayed)} message{'' if replayed == 1 else 's'}")
    if result.get("more"):
        print("more FAILED messages match: run it again", file=sys.stderr)
    return OK


__all__ = ["register"]
