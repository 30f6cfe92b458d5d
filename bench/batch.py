"""Submissions accepted per second: batches of 100 against single submits, same run.

    .venv/bin/python bench/batch.py [--messages N] [--concurrency C] [--rounds R]

Starts `notify-relay serve` on a fresh SQLite file and submits N messages with C requests
in flight, first one message a request, then 100 a request (POST /v1/messages/batch),
alternating R times so that the machine's drift falls on both alike. Every message is
scheduled a day ahead (deliverAt), so that only acceptance is measured: validation,
the durable write (synchronous=FULL) and the queue entry, no delivery. Prints each
figure and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from run import free_port, peak_rss_mib, start_server

BATCH = 100


def submission(run: str, i: int, deliver_at: str) -> dict[str, object]:
    return {"messageId": f"{run}-{i}", "targetUrl": "http://127.0.0.1:9/later",
            "body": {"order": i, "sku": "A-100", "quantity": 2}, "deliverAt": deliver_at}


async def submit_all(url: str, items: list[dict[str, object]], per_request: int,
                     concurrency: int) -> float:
    """Messages accepted per second."""
    chunks = [items[i:i + per_request] for i in range(0, len(items), per_request)]
    queue: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            if per_request == 1:
                async with session.post(f"{url}/v1/messages", json=chunk[0]) as response:
                    assert response.status == 202, await response.text()
            else:
                async with session.post(f"{url}/v1/messages/batch",
                                        json={"messages": chunk}) as response:
                    body = await response.json()
                    assert response.status == 200, body
                    assert all(item["httpStatus"] == 202 for item in body["items"]), body

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        return len(items) / (time.perf_counter() - started)


async def measure(url: str, n: int, concurrency: int, rounds: int) -> None:
    deliver_at = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    singles, batches = [], []
    for r in range(rounds):
        for per_request, figures in ((1, singles), (BATCH, batches)):
            run = f"{r}-{per_request}-{uuid.uuid4().hex[:6]}"
            items = [submission(run, i, deliver_at) for i in range(n)]
            # batches need fewer requests in flight to keep the server busy
            in_flight = concurrency if per_request == 1 else max(2, concurrency // 16)
            rate = await submit_all(url, items, per_request, in_flight)
            figures.append(rate)
            print(f"round {r + 1}: {'single' if per_request == 1 else 'batch of 100'}: "
                  f"{rate:,.0f} accepted/s ({in_flight} requests in flight)", flush=True)
    single, batch = statistics.median(singles), statistics.median(batches)
    print(f"median: single {single:,.0f}/s, batch of 100 {batch:,.0f}/s: "
          f"batch/single = {batch / single:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "bench.db", port)
        try:
            asyncio.run(measure(f"http://127.0.0.1:{port}", args.messages, args.concurrency,
                                args.rounds))
            print(f"server peak RSS {peak_rss_mib(server.pid):.0f} MiB")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
