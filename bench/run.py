"""End-to-end benchmark of the embedded server against a fast partner on loopback.

    .venv/bin/python bench/run.py [--messages N] [--concurrency C]

Starts bench/partner.py and `notify-relay serve` as processes of their own, submits N
messages over HTTP with C in flight, and prints: accepted/s, delivered/s end to end,
accept -> first attempt latency p50/p99, the server's peak RSS, and the ceiling: the same
partner hit directly by the delivery client with no persistence.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp

from notify_relay.adapters.http import AiohttpDeliverer
from notify_relay.domain.network import NetworkPolicy, parse_networks
from notify_relay.ports import OutboundRequest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_partner() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "partner.py"), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, port


async def partner_count(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/__count") as response:
        return int(await response.text())


async def ceiling(port: int, n: int, concurrency: int) -> float:
    """Requests/s of the delivery client alone: no API, no store, no queue."""
    deliverer = AiohttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])), concurrency)
    await deliverer.open()
    request = OutboundRequest(f"http://127.0.0.1:{port}/ceiling", "POST",
                              [("Content-Type", "application/json")], b'{"n":1}', 30.0)
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            result = await deliverer.send(request)
            assert result.status_code == 200, result

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - start
    await deliverer.close()
    return n / elapsed


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(db: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(port), "--db", str(db),
         "--allow-networks", "127.0.0.0/8", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


async def end_to_end(server_port: int, partner_port: int, n: int, concurrency: int,
                     sample: int, rate: float | None) -> dict[str, float]:
    base = f"http://127.0.0.1:{server_port}"
    target = f"http://127.0.0.1:{partner_port}/hook"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await partner_count(session, partner_port)
        sem = asyncio.Semaphore(concurrency)

        start = time.perf_counter()

        async def submit(i: int) -> None:
            if rate:  # paced: message i leaves at i / rate seconds
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            body = {"messageId": f"bench-{i}", "targetUrl": target, "body": {"n": i}}
            async with sem, session.post(base + "/v1/messages", json=body) as response:
                if response.status != 202:
                    raise RuntimeError(f"submit {i}: {response.status} {await response.text()}")

        await asyncio.gather(*(submit(i) for i in range(n)))
        accepted_at = time.perf_counter()
        while await partner_count(session, partner_port) - before < n:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        delivered_at = time.perf_counter()

        latencies = []
        for i in range(0, n, max(1, n // sample)):
            async with session.get(f"{base}/v1/messages/bench-{i}") as response:
                message = await response.json()
            created = datetime.fromisoformat(message["createdAt"])
            first = datetime.fromisoformat(message["attempts"][0]["startedAt"])
            latencies.append((first - created).total_seconds() * 1000)
    latencies.sort()
    return {
        "accepted_per_s": n / (accepted_at - start),
        "delivered_per_s": n / (delivered_at - start),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sample", type=int, default=2000, help="messages read for latency")
    parser.add_argument("--rate", type=float, default=None,
                        help="submit at this many per second instead of as fast as possible")
    args = parser.parse_args()
    partner, partner_port = start_partner()
    server = None
    try:
        asyncio.run(ceiling(partner_port, min(2000, args.messages), args.concurrency))  # warm
        top = asyncio.run(ceiling(partner_port, args.messages, args.concurrency))
        with tempfile.TemporaryDirectory() as tmp:
            server_port = free_port()
            server = start_server(Path(tmp) / "bench.db", server_port)
            figures = asyncio.run(end_to_end(server_port, partner_port, args.messages,
                                             args.concurrency, args.sample, args.rate))
            rss = peak_rss_mib(server.pid)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            db_size = (Path(tmp) / "bench.db").stat().st_size / 2**20
    finally:
        if server is not None and server.poll() is None:
            server.kill()
        partner.terminate()
        partner.wait(timeout=10)
    paced = f" paced at {args.rate:g}/s" if args.rate else ""
    print(f"machine: {os.cpu_count()} cores; N={args.messages} C={args.concurrency}{paced}")
    print(f"accepted          {figures['accepted_per_s']:8.0f} /s")
    print(f"delivered e2e     {figures['delivered_per_s']:8.0f} /s")
    print(f"accept->attempt   p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms")
    print(f"server peak RSS   {rss:8.1f} MiB   (database {db_size:.1f} MiB)")
    print(f"ceiling (client)  {top:8.0f} /s")
    print(f"e2e / ceiling     {figures['delivered_per_s'] / top:8.2f}")


if __name__ == "__main__":
    main()
