"""The reference notify-relay is measured against: answers 202 and forwards, nothing else.

    python bench/forwarder.py PORT [--concurrency C]

One aiohttp process serving `POST /v1/messages`: it reads `targetUrl`, `method`, `headers`
and `body` as docs/API.md describes them, answers 202 at once and sends the request in a
background task through one shared ClientSession, at most C at a time. No storage, no
validation, no retries: what is left is the cost of HTTP in and out on this machine, so
that bench/run.py can report notify-relay's delivered/s as a share of it in the same run
(issue 9). Prints one line on stdout when it listens, as bench/partner.py does; a failed
forward is counted and the count printed on stderr when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
import orjson
from aiohttp import web

ACCEPTED = orjson.dumps({"status": "QUEUED", "stored": False, "queued": True})
TIMEOUT = aiohttp.ClientTimeout(total=30.0)  # notify-relay's default per-attempt timeout


class Forwarder:
    """Owns the outbound session, the bound on sends in flight and the pending tasks."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.semaphore = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()  # held so that none is collected early
        self.failures = 0
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             trust_env=False)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    async def submit(self, request: web.Request) -> web.Response:
        try:
            message = orjson.loads(await request.read())
            url = message["targetUrl"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:  # not validation: no crash
            return web.Response(status=400, text=f"unreadable submission: {exc}")
        method = str(message.get("method") or "POST").upper()
        headers: dict[str, str] = dict(message.get("headers") or {})
        body = message.get("body")
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = orjson.dumps(body)
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        task = asyncio.create_task(self.forward(method, url, headers, data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return web.Response(status=202, body=ACCEPTED, content_type="application/json")

    async def forward(self, method: str, url: str, headers: dict[str, str],
                      data: bytes | None) -> None:
        assert self.session is not None
        async with self.semaphore:
            try:
                async with self.session.request(method, url, headers=headers, data=data,
                                                allow_redirects=False,
                                                timeout=TIMEOUT) as response:
                    await response.read()
                    if not 200 <= response.status < 300:
                        self.failures += 1
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.failures += 1


async def serve(port: int, concurrency: int) -> None:
    forwarder = Forwarder(concurrency)
    await forwarder.open()
    app = web.Application()
    app.router.add_post("/v1/messages", forwarder.submit)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]  # the port given, or the one picked for port 0
    print(f"forwarder listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await forwarder.close()
        if forwarder.failures:
            print(f"forwarder: {forwarder.failures} forwards failed", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--concurrency", type=int, default=128,
                        help="forwards in flight at once (kept at 128, serve's --concurrency "
                             "until its default went to 256, so that the reference does not "
                             "move; serve has at most 64 in flight to the one partner)")
    args = parser.parse_args()
    try:
        import uvloop  # notify-relay serve runs on it too (uvicorn's default when installed)

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.concurrency))


if __name__ == "__main__":
    main()
