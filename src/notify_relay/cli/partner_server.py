"""A partner to try notify-relay against: an aiohttp server that answers every request as
told and prints one line for each.

The path can choose the answer (`/status/503` answers 503); otherwise `--status`, then
`--fail-rate` (503 at that rate), else 200. With a signing secret, each request's
Standard Webhooks signature is checked and the line says whether it is valid.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from aiohttp import web
from standardwebhooks import Webhook

from notify_relay.cli.output import clean

BODY_SHOWN = 200  # characters of each body printed
SHOWN_HEADERS = ("content-type", "idempotency-key", "x-correlation-id", "webhook-id")
MAX_BODY = 16 * 1024 * 1024  # above the relay's 6 MiB request limit
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the partner answers: `status` always when set, else 503 at `fail_rate`."""

    status: int | None = None
    fail_rate: float = 0.0
    delay: float = 0.0
    secret: str | None = None


def status_for(path: str, behaviour: Behaviour, draw: Callable[[], float]) -> int:
    """The answer to a request for `path`: `/status/<code>` chooses; then the behaviour."""
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "status" and parts[1].isdigit():
        code = int(parts[1])
        if 200 <= code <= 599:
            return code
    if behaviour.status is not None:
        return behaviour.status
    if behaviour.fail_rate > 0 and draw() < behaviour.fail_rate:
        return 503
    return 200


def signature_check(secret: str, body: bytes, headers: Mapping[str, str]) -> str:
    """`valid`, `missing`, or `INVALID (why)`: the Standard Webhooks signature of a request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if not all(lowered.get(name) for name in SIGNATURE_HEADERS):
        return "missing"
    try:
        Webhook(secret).verify(body.decode("utf-8"), lowered, json_parse=False)
    except Exception as exc:  # the package raises several kinds for a bad header or body
        return f"INVALID ({clean(str(exc) or type(exc).__name__)})"
    return "valid"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_line(method: str, path: str, headers: Mapping[str, str], body: bytes,
                 status: int, behaviour: Behaviour, signature: str | None) -> str:
    """One line: time, method, path, answer, a few headers, the body's first characters."""
    lowered = {k.lower(): v for k, v in headers.items()}
    parts = [now(), clean(method), clean(path), f"-> {status}"]
    if behaviour.delay:
        parts[-1] += f" after {behaviour.delay:g}s"
    parts += [f"{name}={clean(lowered[name])}" for name in SHOWN_HEADERS if name in lowered]
    if signature is not None:
        parts.append(f"signature={signature}")
    text = body.decode("utf-8", errors="replace")
    shown = clean(text[:BODY_SHOWN])
    if len(text) > BODY_SHOWN:
        shown += f"… ({len(body)} bytes)"
    parts.append(f"body={shown}" if body else "body=(none)")
    return "  ".join(parts)


def make_app(behaviour: Behaviour, out: TextIO,
             draw: Callable[[], float] = random.random) -> web.Application:
    async def answer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = status_for(request.path, behaviour, draw)
        signature = (signature_check(behaviour.secret, body, request.headers)
                     if behaviour.secret else None)
        print(request_line(request.method, request.path_qs, request.headers, body, status,
                           behaviour, signature), file=out, flush=True)
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if status in (204, 304):
            return web.Response(status=status)
        return web.json_response({"status": status, "ok": 200 <= status < 300,
                                  "receivedBytes": len(body)}, status=status)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def serve(host: str, port: int, behaviour: Behaviour, out: TextIO = sys.stdout,
                ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop: requests in progress get a second."""
    runner = web.AppRunner(make_app(behaviour, out), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, shutdown_timeout=1.0)
        await site.start()
        address = runner.addresses[0]
        bound_host, bound_port = address[0], address[1]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}"
        if ready is not None:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        try:
            await stop.wait()
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
    finally:
        await runner.cleanup()


__all__ = ["Behaviour", "make_app", "request_line", "serve", "signature_check", "status_for"]
