"""aiohttp vs httpx against the fast partner: the figures behind the delivery client choice.

    .venv/bin/python bench/clients.py [--requests N] [--concurrency C]

Each line: requests/s and this process's CPU a request. "deliverer" is notify-relay's own
client (adapters/http.py) as it sends nearly everything: its own HTTP/1.1 exchange
(http1.py), with the policy-checking resolver and the answer's capture. "via-aiohttp" is
the same client sending through aiohttp's request and response classes, as it sends HEAD
and `Expect` (and as it sent everything before http1.py).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

from notify_relay.adapters.http import HttpDeliverer
from notify_relay.domain.network import NetworkPolicy, parse_networks
from notify_relay.ports import OutboundRequest

HERE = Path(__file__).parent


async def run_aiohttp(url: str, n: int, c: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
        sem = asyncio.Semaphore(c)

        async def one() -> None:
            async with sem, session.post(url, data=b'{"a":1}') as response:
                await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start)


async def run_httpx(url: str, n: int, c: int) -> float:
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits) as client:
        sem = asyncio.Semaphore(c)

        async def one() -> None:
            async with sem:
                (await client.post(url, content=b'{"a":1}')).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start)


async def run_deliverer(url: str, n: int, c: int, own_http1: bool = True) -> float:
    client = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])), max_connections=c,
                              own_http1=own_http1)
    await client.open()
    request = OutboundRequest(url=url, method="POST", body=b'{"a":1}', timeout_seconds=10.0,
                              headers=(("Content-Type", "application/json"),))
    try:
        sem = asyncio.Semaphore(c)

        async def one() -> None:
            async with sem:
                result = await client.send(request)
                if result.status_code != 200:
                    raise RuntimeError(f"the partner answered {result}")

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - start)
    finally:
        await client.close()


async def run_via_aiohttp(url: str, n: int, c: int) -> float:
    return await run_deliverer(url, n, c, own_http1=False)


def start_partner() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, str(HERE / "partner.py"), "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, "http://" + line.rsplit(" ", 1)[1].strip() + "/hook"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    partner, url = start_partner()
    try:
        for name, fn in (("aiohttp", run_aiohttp), ("deliverer", run_deliverer),
                         ("via-aiohttp", run_via_aiohttp), ("deliverer", run_deliverer),
                         ("via-aiohttp", run_via_aiohttp), ("httpx", run_httpx)):
            asyncio.run(fn(url, min(1000, args.requests), args.concurrency))  # warm-up
            cpu = time.process_time()
            rate = asyncio.run(fn(url, args.requests, args.concurrency))
            cpu_us = (time.process_time() - cpu) / args.requests * 1e6
            print(f"{name:11s} {rate:8.0f} requests/s  {cpu_us:6.1f} us CPU a request  "
                  f"(n={args.requests}, c={args.concurrency})")
    finally:
        partner.terminate()
        partner.wait(timeout=10)


if __name__ == "__main__":
    main()
