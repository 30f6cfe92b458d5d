"""`notify-relay destinations ...`: list, show, pause and resume the sender's destinations
on a running server, over its HTTP API."""

from __future__ import annotations

from typing import Any

from notify_relay.cli.http_client import RelayClient
from notify_relay.cli.output import clean, fields, print_json, print_list
from notify_relay.cli.remote import OK, Subparsers, add_command, count

STATES = ("CLOSED", "OPEN", "HALF_OPEN")


def register(commands: Subparsers) -> None:
    group = commands.add_parser(
        "destinations", help="list, show, pause or resume destinations on a server",
        description="Destinations (where messages go, each with its breaker, concurrency "
                    "cap and rate) on a running server, over its HTTP API.")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = add_command(actions, "list", list_destinations,
                          help="the sender's destinations, by name")
    listing.add_argument("--state", type=str.upper, choices=STATES, default=None,
                         help="only destinations whose breaker is in this state")
    listing.add_argument("--limit", type=count(1, 1_000_000), default=50, metavar="N",
                         help="at most N destinations [default 50]")
    listing.add_argument("--all", action="store_true",
                         help="every destination, following the pages to the end")
    listing.add_argument("--cursor", default=None, help="start at this nextCursor")

    show = add_command(actions, "show", show_destination,
                       help="one destination: breaker, limits and backlog")
    show.add_argument("name", metavar="NAME")

    pause = add_command(actions, "pause", pause_destination,
                        help="send nothing more to a destination until it is resumed",
                        description="Pause a destination: no attempt starts while it is "
                                    "paused, and waiting spends no attempt.")
    pause.add_argument("name", metavar="NAME")

    resume = add_command(actions, "resume", resume_destination,
                         help="send to a paused destination again")
    resume.add_argument("name", metavar="NAME")


DESTINATION_COLUMNS = ("destination", "state", "paused", "in flight", "pending",
                       "concurrency", "rate/s", "failures", "last error")


def destination_row(d: dict[str, Any]) -> list[object]:
    return [d.get("destination"), d.get("state"), d.get("paused"), d.get("inFlight"),
            d.get("pending"), d.get("maxConcurrency"), d.get("ratePerSecond"),
            d.get("consecutiveFailures"), d.get("lastError")]


def destination_fields(d: dict[str, Any]) -> str:
    pairs: list[tuple[str, object]] = [
        ("destination", d.get("destination")),
        ("state", d.get("state")),
        ("paused", d.get("paused")),
        ("max concurrency", d.get("maxConcurrency")),
    ]
    if "currentConcurrency" in d:
        pairs.append(("current concurrency", d.get("currentConcurrency")))
    pairs += [
        ("rate per second", d.get("ratePerSecond")),
        ("in flight", d.get("inFlight")),
        ("pending", d.get("pending")),
        ("consecutive failures", d.get("consecutiveFailures")),
        ("opened", d.get("openedAt")),
        ("next probe", d.get("nextProbeAt")),
    ]
    if "heldUntil" in d:
        pairs.append(("held until", d.get("heldUntil")))
    pairs += [
        ("last attempt", d.get("lastAttemptAt")),
        ("last success", d.get("lastSuccessAt")),
        ("last error", d.get("lastError")),
    ]
    return fields(pairs)


def list_destinations(client: RelayClient, args: dict[str, Any]) -> int:
    print_list(client.list_destinations, args, noun="destinations",
               columns=DESTINATION_COLUMNS, row=destination_row, state=args["state"])
    return OK


def show_destination(client: RelayClient, args: dict[str, Any]) -> int:
    view = client.get_destination(args["name"])
    if args["json"]:
        print_json(view)
    else:
        print(destination_fields(view))
    return OK


def _set_paused(client: RelayClient, args: dict[str, Any], paused: bool) -> int:
    view = client.patch_destination(args["name"], {"paused": paused})
    if args["json"]:
        print_json(view)
    else:
        print(f"{clean(view.get('destination'))}: {'paused' if view.get('paused') else 'resumed'}"
              f" ({clean(view.get('pending'))} pending, {clean(view.get('inFlight'))} in flight)")
    return OK


def pause_destination(client: RelayClient, args: dict[str, Any]) -> int:
    return _set_paused(client, args, True)


def resume_destination(client: RelayClient, args: dict[str, Any]) -> int:
    return _set_paused(client, args, False)


__all__ = ["register"]
