"""aiohttp vs httpx against the fast partner: the figures behind the delivery client choice.

    .venv/bin/python bench/clients.py [--requests N] [--concurrency C]
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
        for name, fn in (("aiohttp", run_aiohttp), ("httpx", run_httpx)):
            asyncio.run(fn(url, min(1000, args.requests), args.concurrency))  # warm-up
            rate = asyncio.run(fn(url, args.requests, args.concurrency))
            print(f"{name:8s} {rate:8.0f} requests/s  (n={args.requests}, c={args.concurrency})")
    finally:
        partner.terminate()
        partner.wait(timeout=10)


if __name__ == "__main__":
    main()
