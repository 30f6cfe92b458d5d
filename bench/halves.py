"""Each half of the embedded server alone, in one run: what a process per half could reach.

    .venv/bin/python bench/halves.py [--messages N] [--concurrency C]

Starts bench/partner.py and `notify-relay serve` (defaults, INFO logs), pauses the
partner's destination, submits N messages over HTTP with C in flight (the API alone: the
worker claims nothing of a paused destination), then resumes it and waits until the partner
has counted the N (delivery alone, no submissions meanwhile). Prints each half's rate, its
server CPU a message (all the server's processes) and the cores it used. The issue 9
question it answers: with the API in one process and delivery in another (`serve
--processes 2`, the default on two cores), the end-to-end rate can at best approach the
slower half, less the harness's own CPU on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from machine import cpu_seconds
from run import free_port, partner_count, start_partner, start_server


async def halves(n: int, concurrency: int) -> None:
    partner, partner_port = start_partner()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            port = free_port()
            server = start_server(Path(scratch) / "relay.db", port)
            try:
                await measure(server.pid, port, partner_port, n, concurrency)
            finally:
                server.terminate()
                server.wait()
    finally:
        partner.terminate()
        partner.wait()


async def measure(pid: int, port: int, partner_port: int, n: int, concurrency: int) -> None:
    base = f"http://127.0.0.1:{port}"
    destination = f"{base}/v1/destinations/127.0.0.1:{partner_port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.patch(destination, json={"paused": True}) as response:
            assert response.status == 200, await response.text()
        sem = asyncio.Semaphore(concurrency)

        async def submit(i: int) -> None:
            body = {"messageId": f"half-{i}", "targetUrl": f"http://127.0.0.1:{partner_port}/h",
                    "body": {"n": i}}
            async with sem, session.post(base + "/v1/messages", json=body) as response:
                assert response.status == 202, await response.text()

        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(n)))
        cpu1, t1 = cpu_seconds(pid), time.perf_counter()
        before = await partner_count(session, partner_port)
        async with session.patch(destination, json={"paused": False}) as response:
            assert response.status == 200, await response.text()
        t2 = time.perf_counter()
        while await partner_count(session, partner_port) - before < n:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # polling the partner's counter, as bench/run.py does
        cpu3, t3 = cpu_seconds(pid), time.perf_counter()
    print(f"API alone (delivery paused) {n / (t1 - t0):7.0f} accepted/s   server CPU "
          f"{1000 * (cpu1 - cpu0) / n:.2f} ms a message, {(cpu1 - cpu0) / (t1 - t0):.2f} cores")
    print(f"delivery alone (a backlog)  {n / (t3 - t2):7.0f} delivered/s  server CPU "
          f"{1000 * (cpu3 - cpu1) / n:.2f} ms a message, {(cpu3 - cpu1) / (t3 - t2):.2f} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=15000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; N={args.messages} C={args.concurrency}")
    asyncio.run(halves(args.messages, args.concurrency))


if __name__ == "__main__":
    main()
