"""End-to-end benchmark of the embedded server against a fast partner on loopback.

    .venv/bin/python bench/run.py [--messages N] [--concurrency C]

Starts bench/partner.py and `notify-relay serve` as processes of their own, submits N
messages over HTTP with C in flight, and prints: accepted/s, delivered/s end to end,
accept -> first attempt latency p50/p99, the server's peak RSS, and the ceiling: the same
partner hit directly by the delivery client with no persistence.

Then, unless --skip-forwarder, the same N through bench/forwarder.py (answers 202 and
forwards, nothing stored) with the same harness and partner, and notify-relay's delivered/s
as a share of the forwarder's (issue 9: at least 60 %). Both are measured in one run
because this machine's figures drift from run to run (780-1,300/s for the same server).
They drift within a run too: the forwarder alone gave 4,635-5,535/s in five runs one after
the other. `--rounds N` measures the two in turn N times and prints each round's ratio and
their median.

Paced (`--rate`), the answers are also timed from when each was due (a stall's queue for
the C connections counted, as a client of that pace would see it) and their slow ones
grouped into stalls; and each round times the disk alone at the same pace, in the
database's folder, once the server has stopped (bench/disk.py): about what its flushes put
under a server that answers only once durable. `--db-dir /dev/shm` leaves them out.
"""

from __future__ import annotations

import argparse
import asyncio
import math
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
from typing import Any

import aiohttp

from disk import describe, percentile, probe, summary
from machine import cpu_seconds, process_tree, split_between, split_mark, written_bytes
from notify_relay.adapters.http import HttpDeliverer
from notify_relay.domain.network import NetworkPolicy, parse_networks
from notify_relay.ports import OutboundRequest

HERE = Path(__file__).parent
STALL_SECONDS = 30.0  # no delivery for this long: something was lost, stop waiting
WARM_SECONDS = 1.0  # submissions sent earlier are left out of the "after" percentiles


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


def start_forwarder(concurrency: int) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "forwarder.py"), str(port),
                             "--concurrency", str(concurrency)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if not proc.stdout.readline():
        raise RuntimeError("forwarder did not start")
    return proc, port


async def partner_count(session: aiohttp.ClientSession, port: int) -> int:
    async with session.get(f"http://127.0.0.1:{port}/__count") as response:
        return int(await response.text())


async def ceiling(port: int, n: int, concurrency: int) -> float:
    """Requests/s of the delivery client alone: no API, no store, no queue."""
    deliverer = HttpDeliverer(NetworkPolicy(parse_networks(["127.0.0.0/8"])), concurrency)
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
    """The peak RSS of the process and of each live descendant, added up."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))
    return total / 1024 if total else float("nan")


def start_server(db: Path, port: int, log_level: str = "INFO",
                 *flags: str) -> subprocess.Popen[bytes]:
    """`notify-relay serve` with its defaults (INFO logs, the issue's target) but for the
    port, the file and loopback partners; its log lines go to /dev/null, still written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(port), "--db", str(db),
         "--allow-networks", "127.0.0.0/8", "--log-level", log_level, *flags],
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


async def submit_and_wait(session: aiohttp.ClientSession, base: str, partner_port: int,
                          n: int, concurrency: int, rate: float | None,
                          path: str, waits: list[tuple[float, float]] | None = None,
                          late: list[tuple[float, float]] | None = None
                          ) -> tuple[float, float]:
    """(accepted/s, delivered/s) of N submissions through base: one harness for every system;
    each submission's (send time in s from the first, answer time in ms) goes into `waits`,
    and paced, its (due time, ms from then to its answer) into `late`: that counts the wait
    for one of the C connections too, which a stall makes long.

    Delivered means counted by the partner: the time runs from the first submit until the
    partner's count has grown by N, so the systems must run one after the other.
    """
    target = f"http://127.0.0.1:{partner_port}{path}"
    before = await partner_count(session, partner_port)
    sem = asyncio.Semaphore(concurrency)

    start = time.perf_counter()

    async def submit(i: int) -> None:
        body = {"messageId": f"bench-{i}", "targetUrl": target, "body": {"n": i}}
        async with sem:
            sent = time.perf_counter()
            async with session.post(base + "/v1/messages", json=body) as response:
                if response.status != 202:
                    raise RuntimeError(f"submit {i}: {response.status} {await response.text()}")
            answered = time.perf_counter()
            if waits is not None:
                waits.append((sent - start, (answered - sent) * 1000))
            if late is not None and rate:
                late.append((i / rate, (answered - start - i / rate) * 1000))

    if rate:  # paced: message i leaves at i / rate seconds, started then and not before
        # (20,000 tasks made up front, each asleep until its time, took the loop long
        # enough that the first few hundred were overdue together: a burst, not a pace)
        sending = []
        for i in range(n):
            if (ahead := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            sending.append(asyncio.create_task(submit(i)))
        await asyncio.gather(*sending)
    else:
        await asyncio.gather(*(submit(i) for i in range(n)))
    accepted_at = time.perf_counter()
    seen, progress_at = -1, accepted_at
    while (count := await partner_count(session, partner_port) - before) < n:
        if count > seen:
            seen, progress_at = count, time.perf_counter()
        elif time.perf_counter() - progress_at > STALL_SECONDS:  # a lost forward, say
            raise RuntimeError(f"{base}: {count} of {n} delivered, none for {STALL_SECONDS} s")
        await asyncio.sleep(0.01)
    delivered_at = time.perf_counter()
    return n / (accepted_at - start), n / (delivered_at - start)


async def end_to_end(server_port: int, partner_port: int, n: int, concurrency: int,
                     sample: int, rate: float | None,
                     groups: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """`groups`: the processes whose CPU is split out while the N go through (not while
    the sample is read back afterwards)."""
    groups = groups or {}
    base = f"http://127.0.0.1:{server_port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        waits: list[tuple[float, float]] = []
        late: list[tuple[float, float]] = []
        mark = split_mark(groups)
        accepted, delivered = await submit_and_wait(session, base, partner_port, n,
                                                    concurrency, rate, "/relay", waits, late)
        split, idle = split_between(mark, split_mark(groups), n)
        latencies = []
        for i in range(0, n, max(1, n // sample)):
            async with session.get(f"{base}/v1/messages/bench-{i}") as response:
                message = await response.json()
            created = datetime.fromisoformat(message["createdAt"])
            first = datetime.fromisoformat(message["attempts"][0]["startedAt"])
            latencies.append((first - created).total_seconds() * 1000)
    latencies.sort()
    # the first second (connections opened, a server's first requests) shown apart
    steady = sorted(ms for at, ms in waits if at >= WARM_SECONDS)
    answers = sorted(ms for _, ms in waits)
    return {
        "answers": summary(late),
        "accepted_per_s": accepted,
        "delivered_per_s": delivered,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "submit_p50_ms": statistics.median(answers),
        "submit_p99_ms": percentile(answers, 0.99),
        "steady_p50_ms": statistics.median(steady) if steady else math.nan,
        "steady_p99_ms": percentile(steady, 0.99) if steady else math.nan,
        "split_ms": split,
        "idle": idle,
    }


async def forwarded(forwarder_port: int, partner_port: int, n: int, concurrency: int,
                    rate: float | None, groups: dict[str, list[int]]) -> dict[str, Any]:
    """The same submissions through bench/forwarder.py: the reference for the ratio, and
    for the submit answer's times (what the harness and the machine add to any server's)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    waits: list[tuple[float, float]] = []
    late: list[tuple[float, float]] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        mark = split_mark(groups)
        accepted, delivered = await submit_and_wait(
            session, f"http://127.0.0.1:{forwarder_port}", partner_port, n, concurrency,
            rate, "/forwarder", waits, late)
        split, idle = split_between(mark, split_mark(groups), n)
    answers = sorted(ms for _, ms in waits)
    return {"accepted_per_s": accepted, "delivered_per_s": delivered,
            "submit_p50_ms": statistics.median(answers),
            "submit_p99_ms": percentile(answers, 0.99), "answers": summary(late),
            "split_ms": split, "idle": idle}


async def count_once(partner_port: int) -> int:
    async with aiohttp.ClientSession() as session:
        return await partner_count(session, partner_port)


def measure_relay(args: argparse.Namespace, partner: subprocess.Popen[str], partner_port: int,
                  extra: dict[str, int]) -> dict[str, Any]:
    """One run of notify-relay on a fresh file: end_to_end's figures, with its peak RSS,
    CPU a message and file size."""
    server = None
    try:
        with tempfile.TemporaryDirectory(dir=args.db_dir) as tmp:
            server_port = free_port()
            server = start_server(Path(tmp) / "bench.db", server_port, args.log_level,
                                  *(["--processes", str(args.processes)] if args.processes
                                    else []))
            before = asyncio.run(count_once(partner_port))
            owner, *others = process_tree(server.pid)  # two processes: the API is the other
            groups = {"owner" if others else "server": [owner], "API": others,
                      "harness": harness_pids(partner)}
            figures = asyncio.run(end_to_end(server_port, partner_port, args.messages,
                                             args.concurrency, args.sample, args.rate,
                                             groups))
            figures["rss_mib"] = peak_rss_mib(server.pid)
            figures["cpu_ms"] = cpu_seconds(server.pid) * 1000 / args.messages
            figures["written_kib"] = written_bytes(server.pid) / 1024 / args.messages
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            extra["relay"] += asyncio.run(count_once(partner_port)) - before - args.messages
            figures["db_mib"] = (Path(tmp) / "bench.db").stat().st_size / 2**20
            if args.rate:  # the disk's own flushes at the same pace, as long, in the same folder
                figures["disk"] = probe(Path(tmp), args.rate, args.messages / args.rate)
            return figures
    finally:
        if server is not None and server.poll() is None:
            server.kill()


def harness_pids(partner: subprocess.Popen[str]) -> list[int]:
    """The processes of the harness, the same for every system measured: this one (the
    client) and the partner."""
    return [os.getpid(), partner.pid]


def measure_forwarder(args: argparse.Namespace, partner: subprocess.Popen[str],
                      partner_port: int, extra: dict[str, int]) -> dict[str, Any]:
    forwarder = None
    try:
        forwarder, forwarder_port = start_forwarder(args.forward_concurrency)
        before = asyncio.run(count_once(partner_port))
        groups = {"forwarder": [forwarder.pid], "harness": harness_pids(partner)}
        reference = asyncio.run(forwarded(forwarder_port, partner_port, args.messages,
                                          args.concurrency, args.rate, groups))
        reference["rss_mib"] = peak_rss_mib(forwarder.pid)
        forwarder.send_signal(signal.SIGTERM)
        forwarder.wait(timeout=30)
        extra["forwarder"] += asyncio.run(count_once(partner_port)) - before - args.messages
        return reference
    finally:
        if forwarder is not None and forwarder.poll() is None:
            forwarder.kill()


def report(figures: dict[str, Any], reference: dict[str, Any] | None,
           args: argparse.Namespace, top: float) -> None:
    print(f"accepted          {figures['accepted_per_s']:8.0f} /s")
    print(f"delivered e2e     {figures['delivered_per_s']:8.0f} /s")
    after = (f"p50 {figures['steady_p50_ms']:.1f} ms  p99 {figures['steady_p99_ms']:.1f} ms"
             if not math.isnan(figures["steady_p50_ms"]) else "none sent then")
    print(f"submit answer     p50 {figures['submit_p50_ms']:.1f} ms  "
          f"p99 {figures['submit_p99_ms']:.1f} ms   (after the first {WARM_SECONDS:g} s: "
          f"{after})")
    if args.rate:
        print(f"  from due times: {describe(figures['answers'])}")
        print(f"disk alone        {figures['disk'].describe()}   (bench/disk.py: a write "
              "and an fdatasync a submission at the same pace, in the database's folder)")
    print(f"accept->attempt   p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms")
    print(f"server peak RSS   {figures['rss_mib']:8.1f} MiB   "
          f"(database {figures['db_mib']:.1f} MiB)")
    print(f"server CPU        {figures['cpu_ms']:8.2f} ms a message (start-up included)")
    print(f"server disk writes {figures['written_kib']:7.1f} KiB a message (start-up included)")
    split = "  ".join(f"{name} {ms:.3f}" for name, ms in figures["split_ms"].items()
                      if name != "API" or ms)
    print(f"CPU while the N went through: {split} ms a message; "
          f"machine idle {figures['idle']:.0%}")
    harness = figures["split_ms"].get("harness")
    if harness:  # its work a message is fixed: this ratio moves with the machine far less
        server = sum(ms for name, ms in figures["split_ms"].items() if name != "harness")
        print(f"server / harness CPU {server / harness:5.2f}   (the server's CPU a message "
              "in the harness's: steadier than rates across a machine's speed)")
    print(f"e2e / ceiling     {figures['delivered_per_s'] / top:8.2f}")
    if reference is not None:
        print(f"forwarder accepted {reference['accepted_per_s']:7.0f} /s   "
              f"(stateless, {args.forward_concurrency} forwards in flight)")
        print(f"forwarder e2e     {reference['delivered_per_s']:8.0f} /s   "
              f"(peak RSS {reference['rss_mib']:.1f} MiB)")
        print(f"forwarder answer  p50 {reference['submit_p50_ms']:.1f} ms  "
              f"p99 {reference['submit_p99_ms']:.1f} ms")
        if args.rate:
            print(f"  from due times: {describe(reference['answers'])}")
        split_f = reference["split_ms"]
        print(f"forwarder CPU while the N went through: forwarder {split_f['forwarder']:.3f}  "
              f"harness {split_f['harness']:.3f} ms a message; "
              f"machine idle {reference['idle']:.0%}")
        ratio = figures["delivered_per_s"] / reference["delivered_per_s"]
        print(f"relay / forwarder {ratio:8.1%}   (issue 9 target: >= 60 %)")
        relay_cpu = sum(figures["split_ms"].values())
        if relay_cpu:  # what the rates' ratio would be if both were bound by CPU alone
            print(f"  by CPU a message {sum(split_f.values()) / relay_cpu:6.1%}   (the "
                  "forwarder's and its harness's, in the relay's and its harness's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--log-level", default="INFO",
                        help="the server's (INFO: its default, what the target is set for)")
    parser.add_argument("--sample", type=int, default=2000, help="messages read for latency")
    parser.add_argument("--rate", type=float, default=None,
                        help="submit at this many per second instead of as fast as possible")
    parser.add_argument("--processes", type=int, default=None,
                        help="serve's --processes (default: serve's own default)")
    parser.add_argument("--skip-forwarder", action="store_true",
                        help="measure notify-relay alone, without the stateless reference")
    parser.add_argument("--forward-concurrency", type=int, default=128,
                        help="the forwarder's sends in flight (see bench/forwarder.py: "
                             "128, more than serve's 64 to one destination)")
    parser.add_argument("--db-dir", type=Path, default=None,
                        help="the folder of the server's database (default: the temporary "
                             "folder); a tmpfs such as /dev/shm shows the relay without the "
                             "disk's flushes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="notify-relay then the forwarder, this many times in turn; "
                             "each round's ratio and their median (this machine's speed "
                             "moves by 10 %% from one minute to the next, the forwarder's "
                             "too: a round's ratio compares runs a minute apart)")
    args = parser.parse_args()
    partner, partner_port = start_partner()
    rounds: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    extra = {"relay": 0, "forwarder": 0}  # deliveries beyond N, counted once each has stopped
    try:
        asyncio.run(ceiling(partner_port, min(2000, args.messages), args.concurrency))  # warm
        top = asyncio.run(ceiling(partner_port, args.messages, args.concurrency))
        for _ in range(max(1, args.rounds)):
            figures = measure_relay(args, partner, partner_port, extra)
            reference = (None if args.skip_forwarder
                         else measure_forwarder(args, partner, partner_port, extra))
            rounds.append((figures, reference))
    finally:
        partner.terminate()
        partner.wait(timeout=10)
    paced = f" paced at {args.rate:g}/s" if args.rate else ""
    print(f"machine: {os.cpu_count()} cores; N={args.messages} C={args.concurrency}{paced}")
    print(f"ceiling (client)  {top:8.0f} /s   (the delivery client alone, no server)")
    for number, (figures, reference) in enumerate(rounds, 1):
        if len(rounds) > 1:
            print(f"-- round {number}")
        report(figures, reference, args, top)
    ratios = [f["delivered_per_s"] / r["delivered_per_s"] for f, r in rounds if r is not None]
    if len(ratios) > 1:
        print(f"relay / forwarder by round: {', '.join(f'{r:.1%}' for r in ratios)}; "
              f"median {statistics.median(ratios):.1%}")
    for name, count in extra.items():
        if count:
            print(f"note: the partner received {count} more than N from the {name}")


if __name__ == "__main__":
    main()
