"""Benchmark of the per-destination rules (v1.1): isolation, outage, many destinations.

    .venv/bin/python bench/destinations.py [--scenario isolation|outage|many|all] [options]

Starts bench/partner.py processes and `notify-relay serve` (a fresh database each run,
default flags unless said, INFO logs to a file, --allow-networks 127.0.0.0/8,
--shutdown-grace 1), submits over HTTP with aiohttp (--submit-concurrency in flight, 64)
and measures. Every figure that depends on the machine's speed is printed with a
reference measured in the same run, and as a ratio to it; where a case is compared with a
reference case, the reference runs before and after each case (A B A B A ...) and the
case is divided by the mean of its two neighbours (of the undisturbed one, when only one
is; see below), so that the machine's speed drifting between runs cancels to first order.
Each wait is bounded: a scenario that exceeds one is aborted with the reason, and the next
one runs.

- isolation: deliveries/s of a healthy partner (--healthy-messages, 2,000, counted at the
  partner, first submission to last delivery) while --hang-messages (500) wait on a partner
  that answers only after --hang-seconds (30; default timeout 30 s, so they hold their
  destination's slots: the healthy burst starts once they are in flight), against the
  same without the hanging partner. Prints both rates and the ratio (target >= 0.90).
  With --hang-destinations N the hanging messages are spread over N named destinations
  (each up to its own cap), and with --hang-body-kib each carries a string body of that
  size: 3 destinations of 64 bodies of 6,000 KiB (--hang-messages 192) would hold more than
  twice the worker's 512 MiB bound on bodies in flight, which must not hold back the
  healthy partner either. The server's peak RSS is printed with each run.
- outage: --outage-messages (10,000) to a partner whose port is closed (connection
  refused) for --outage seconds (120), then open, while a healthy partner gets
  --trickle-rate (50) messages/s from --before (20) s earlier to the end. Prints attempts
  per outage message (target < 1.5) from the message views, /metrics and the log, the
  breaker's timeline from the server log, the time from the partner's return to its last
  delivery, and the trickle's delivered rate and latency (client send -> deliveredAt)
  p50/p99 in each phase against the phase before the outage. Once per --cooldowns value
  (default: the server default, 30 s, then 5 s).
- many: --destinations (1,000) destinations with --per-destination (10) messages each
  against one destination with --single-messages (10,000), same partner and flags, first
  submission to last delivery (target: many >= 0.80 of single); then one destination with
  --destination-concurrency at each of --sweep (16, 32, 128, 256; 256 = the global
  --concurrency, i.e. no per-destination cap), all against the default (64); then the
  delivery side alone at each of those: the destination paused while its messages are
  submitted, then resumed, and timed from the resume to the last delivery (drain/s).

The machine may be shared: before each run the benchmark waits (at most --quiet-timeout,
120 s) until other processes use fewer than --quiet-below (0.25) cores, and each run
prints the cores other processes used meanwhile ("others"), which no ratio can cancel when
it changes within a comparison; in isolation and many, a run during which they used more
than --max-others (0.3) cores is discarded and run again (at most --run-tries, 3, in all).
Warnings and errors in the server logs are counted and shown. A summary table of every
figure with its reference, ratio and target ends the output. Server logs (and databases
with --keep-db) stay in the directory printed first and last. `--scenario all` takes about
20 minutes on a quiet 2-core machine, more when it waits for other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from machine import CpuMark, cpu_mark, foreign_cores, wait_quiet
from notify_relay.config import load
from run import HERE, ceiling, free_port, partner_count, peak_rss_mib, start_partner

SUMMARY: list[tuple[str, str, str, str, str]] = []  # scenario, figure, value, ratio, target


class Abort(Exception):
    """A scenario exceeded one of its bounds."""


def note(text: str) -> None:
    print(text, flush=True)


def summary(scenario: str, figure: str, value: str, ratio: str = "", target: str = "") -> None:
    SUMMARY.append((scenario, figure, value, ratio, target))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def wall(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


# -- processes -----------------------------------------------------------------------------


def start_partner_on(port: int) -> subprocess.Popen[str]:
    """bench/partner.py on a port chosen beforehand (start_partner picks its own)."""
    proc = subprocess.Popen([sys.executable, str(HERE / "partner.py"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if not proc.stdout.readline():
        proc.wait(timeout=10)
        reason = proc.stderr.read() if proc.stderr else ""
        raise Abort(f"partner could not listen on {port}: {reason}")
    return proc


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Server:
    """`notify-relay serve` on a fresh database, INFO logs to `<workdir>/<label>.log`."""

    def __init__(self, label: str, workdir: Path, extra: list[str], keep_db: bool) -> None:
        self.label = label
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = workdir / f"{label}.db"
        self.log = workdir / f"{label}.log"
        self.extra = extra
        self.keep_db = keep_db
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss_mib = float("nan")
        self.stop_seconds = float("nan")

    def __enter__(self) -> Server:
        for path in (self.db, Path(f"{self.db}-wal"), Path(f"{self.db}-shm")):
            path.unlink(missing_ok=True)
        command = [sys.executable, "-m", "notify_relay.cli", "serve", "--port", str(self.port),
                   "--db", str(self.db), "--allow-networks", "127.0.0.0/8",
                   "--shutdown-grace", "1", *self.extra]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Abort(f"server exited at start ({self.proc.returncode}); see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise Abort(f"server did not start within 30 s; see {self.log}")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            self.rss_mib = peak_rss_mib(proc.pid)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                note(f"  ! server {self.label} did not stop within 30 s of SIGTERM: killed")
                proc.kill()
                proc.wait(timeout=10)
            self.stop_seconds = time.monotonic() - t0
        if not self.keep_db:
            for path in (self.db, Path(f"{self.db}-wal"), Path(f"{self.db}-shm")):
                path.unlink(missing_ok=True)

    def problems(self) -> str:
        """The log's warnings and errors, counted by message (empty when none)."""
        counts = Counter((e.get("level"), e.get("message")) for e in self.events()
                         if e.get("level") in ("WARNING", "ERROR", "CRITICAL"))
        return ", ".join(f"{n} x {level} {message!r}" for (level, message), n
                         in counts.most_common())

    def events(self, destination: str | None = None) -> list[dict[str, Any]]:
        """The log's JSON lines (of one destination, if named)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if destination is None or entry.get("destination") == destination:
                out.append(entry)
        return out


# -- HTTP helpers --------------------------------------------------------------------------


def session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def get_int(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(url) as response:
        return int(await response.text())


async def get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as response:
        if response.status != 200:
            return None
        return await response.json()


async def submit_all(s: aiohttp.ClientSession, base: str, bodies: Iterable[dict[str, Any]],
                     concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> None:
        async with sem, s.post(base + "/v1/messages", json=body) as response:
            if response.status != 202:
                raise Abort(f"submit {body['messageId']}: {response.status} "
                            f"{(await response.text())[:300]}")

    await asyncio.gather(*(one(body) for body in bodies))


async def wait_for(check: Callable[[], Awaitable[bool]], limit: float, what: str,
                   interval: float = 0.01) -> float:
    """Poll `check` until true; the perf_counter time it was; Abort after `limit` s."""
    deadline = time.perf_counter() + limit
    while not await check():
        if time.perf_counter() > deadline:
            raise Abort(f"timed out after {limit:.0f} s waiting for {what}")
        await asyncio.sleep(interval)
    return time.perf_counter()


async def metrics(s: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with s.get(base + "/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def attempts_by_outcome(m: dict[str, float]) -> dict[str, int]:
    prefix = 'notify_relay_attempts_total{outcome="'
    return {k[len(prefix):-2]: int(v) for k, v in m.items() if k.startswith(prefix)}


async def settled_attempts(s: aiohttp.ClientSession, base: str, total: int) -> dict[str, int]:
    """Attempts by outcome from /metrics once they reach `total` (the partner counts a
    request before the server records it), or as they are after 10 s."""
    attempts: dict[str, int] = {}

    async def recorded() -> bool:
        nonlocal attempts
        attempts = attempts_by_outcome(await metrics(s, base))
        return sum(attempts.values()) >= total

    with contextlib.suppress(Abort):
        await wait_for(recorded, 10, "the server to record the attempts", 0.1)
    return attempts


async def views(s: aiohttp.ClientSession, base: str, ids: list[str],
                concurrency: int) -> dict[str, dict[str, Any]]:
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, dict[str, Any]] = {}

    async def one(message_id: str) -> None:
        async with sem:
            view = await get_json(s, f"{base}/v1/messages/{message_id}")
        if view is None:
            raise Abort(f"message {message_id} not found")
        out[message_id] = view

    await asyncio.gather(*(one(i) for i in ids))
    return out


async def reference(partner_port: int, args: argparse.Namespace) -> float:
    """The delivery client alone against the partner (run.py's ceiling), requests/s."""
    await ceiling(partner_port, 1000, args.submit_concurrency)  # warm
    return await ceiling(partner_port, args.ceiling_requests, args.submit_concurrency)


# -- 1. isolation --------------------------------------------------------------------------


@dataclass
class IsolationRun:
    rate: float
    accepted_rate: float
    problems: str = ""
    hang_open_start: int = 0
    hang_open_end: int = 0
    hang_received: int = 0
    foreign: float = 0.0
    rss_mib: float = float("nan")
    hang_view: dict[str, Any] | None = None
    attempts: dict[str, int] = field(default_factory=dict)


async def isolation_run(args: argparse.Namespace, workdir: Path, healthy: int, hang: int | None,
                        label: str) -> IsolationRun:
    wait_quiet(args.quiet_below, args.quiet_timeout, label)
    with Server(label, workdir, [], args.keep_db) as server:
        async with session(args.submit_concurrency + 8) as s:
            open_start = 0
            named = args.hang_destinations > 1
            hang_dest = "hang-0" if named else f"127.0.0.1:{hang}"
            hang_before = 0
            if hang is not None:
                hang_before = await get_int(s, f"http://127.0.0.1:{hang}/__hanging")
                hang_url = f"http://127.0.0.1:{hang}/hang/{args.hang_seconds:g}"
                filler = "x" * (args.hang_body_kib * 1024)

                def hanging(i: int) -> dict[str, Any]:
                    body: dict[str, Any] = {"messageId": f"hang-{i}", "targetUrl": hang_url,
                                            "body": filler or {"n": i}}
                    if named:
                        body["destination"] = f"hang-{i % args.hang_destinations}"
                    return body

                # big bodies: fewer at once, so that the submissions stay within memory
                await submit_all(s, server.base, map(hanging, range(args.hang_messages)),
                                 args.submit_concurrency if not filler else 4)
                opened = f"http://127.0.0.1:{hang}/__hang_open"

                async def some_open() -> bool:
                    return await get_int(s, opened) > 0

                await wait_for(some_open, 20, "the first hanging attempts")
                # let the destination fill its slots (up to its cap), at most 5 s more
                settle = time.perf_counter() + 5
                last, stable_since = -1, time.perf_counter()
                while time.perf_counter() < settle:
                    now_open = await get_int(s, opened)
                    if now_open != last:
                        last, stable_since = now_open, time.perf_counter()
                    elif time.perf_counter() - stable_since > 0.5:
                        break
                    await asyncio.sleep(0.05)
                open_start = await get_int(s, opened)
            before = await partner_count(s, healthy)
            target = f"http://127.0.0.1:{healthy}/hook"
            mark = cpu_mark()
            t0 = time.perf_counter()
            await submit_all(s, server.base, (
                {"messageId": f"ok-{i}", "targetUrl": target, "body": {"n": i}}
                for i in range(args.healthy_messages)), args.submit_concurrency)
            accepted = time.perf_counter()

            async def all_delivered() -> bool:
                return await partner_count(s, healthy) - before >= args.healthy_messages

            done = await wait_for(all_delivered, args.wait_timeout,
                                  f"{args.healthy_messages} healthy deliveries")
            run = IsolationRun(args.healthy_messages / (done - t0),
                               args.healthy_messages / (accepted - t0),
                               foreign=foreign_cores(mark, cpu_mark()))
            if hang is not None:
                run.hang_open_end = await get_int(s, f"http://127.0.0.1:{hang}/__hang_open")
                run.hang_received = (await get_int(s, f"http://127.0.0.1:{hang}/__hanging")
                                     - hang_before)
                run.hang_open_start = open_start
                run.hang_view = await get_json(s, f"{server.base}/v1/destinations/{hang_dest}")
            run.attempts = await settled_attempts(s, server.base, args.healthy_messages)
    run.problems = server.problems()
    run.rss_mib = server.rss_mib
    return run


async def isolation(args: argparse.Namespace, workdir: Path) -> None:
    shape = (f" in {args.hang_destinations} destinations" if args.hang_destinations > 1
             else "") + (f", {args.hang_body_kib} KiB each" if args.hang_body_kib else "")
    note(f"\n== isolation: {args.healthy_messages} to a healthy partner while "
         f"{args.hang_messages}{shape} wait on a partner hanging {args.hang_seconds:g} s; "
         f"reference: the same without the hanging partner, run before and after ==")
    healthy, healthy_port = start_partner()
    hanging, hang_port = start_partner()
    try:
        ceiling_rate = await reference(healthy_port, args)
        note(f"delivery client alone: {ceiling_rate:.0f} requests/s")

        foreign_seen: list[float] = []

        def runner(hang: int | None) -> Measure:
            async def run(label: str) -> tuple[float, bool]:
                for tries in range(args.run_tries):
                    name = label if tries == 0 else f"{label}-again{tries}"
                    r = await isolation_run(args, workdir, healthy_port, hang,
                                            f"isolation-{name}")
                    note(f"  {name:<10} {r.rate:6.0f} delivered/s  (accepted "
                         f"{r.accepted_rate:.0f}/s)  attempts {r.attempts}  other processes "
                         f"{r.foreign:.2f} cores  peak RSS {r.rss_mib:.0f} MiB")
                    if r.foreign <= args.max_others or tries == args.run_tries - 1:
                        break
                    note("             (run discarded: other processes were busy)")
                foreign_seen.append(r.foreign)
                if hang is not None:
                    view = r.hang_view or {}
                    note(f"             hanging attempts open at the partner: "
                         f"{r.hang_open_start} when the healthy burst began, {r.hang_open_end} "
                         f"at its end ({r.hang_received} received in all); hanging "
                         f"destination: state {view.get('state')}, inFlight "
                         f"{view.get('inFlight')}, currentConcurrency "
                         f"{view.get('currentConcurrency')}, pending {view.get('pending')}")
                if r.problems:
                    note(f"             server log: {r.problems}")
                return r.rate, r.foreign <= args.max_others
            return run

        ratios, rates, refs = await bracketed(runner(None), [("hang", runner(hang_port))],
                                              args.repeats, "alone")
        report("isolation", "alone", refs, ratios, rates, {"hang": ">= 0.90"}, ceiling_rate,
               foreign_seen)
    finally:
        stop(healthy)
        stop(hanging)


# -- 2. outage -----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float  # wall clock, seconds
    end: float


def phase_figures(phase: Phase, sent: dict[str, float],
                  seen: dict[str, dict[str, Any]]) -> tuple[int, float, float, float, int]:
    """(sent in the phase, delivered/s in it, p50 ms, p99 ms, not delivered) for the trickle
    messages submitted in the phase; latency is client send time -> deliveredAt."""
    ids = [i for i, t in sent.items() if phase.start <= t < phase.end]
    latencies, missing = [], 0
    for i in ids:
        delivered = wall(seen[i].get("deliveredAt"))
        if delivered is None:
            missing += 1
        else:
            latencies.append((delivered - sent[i]) * 1000)
    in_phase = sum(1 for view in seen.values()
                   if (d := wall(view.get("deliveredAt"))) is not None
                   and phase.start <= d < phase.end)
    seconds = max(phase.end - phase.start, 1e-9)
    return len(ids), in_phase / seconds, pct(latencies, 0.5), pct(latencies, 0.99), missing


async def outage_run(args: argparse.Namespace, workdir: Path, healthy: int,
                     cooldown: float | None, ref: float) -> None:
    tag = "default" if cooldown is None else f"{cooldown:g}"
    label = f"outage-cooldown-{tag}"
    extra = [] if cooldown is None else ["--breaker-cooldown", f"{cooldown:g}"]
    outage_port = free_port()  # chosen up front; nothing listens there until the return
    dest = f"127.0.0.1:{outage_port}"
    n = args.outage_messages
    note(f"\n-- outage, --breaker-cooldown {tag}: {n} to {dest} (closed for "
         f"{args.outage:g} s), trickle {args.trickle_rate:g}/s to the healthy partner --")
    partner = None
    wait_quiet(args.quiet_below, args.quiet_timeout, label)
    with Server(label, workdir, extra, args.keep_db) as server:
        try:
            async with session(args.submit_concurrency + 8) as s, session(64) as ts:
                sent: dict[str, float] = {}
                marks: list[CpuMark] = []
                stopping = asyncio.Event()
                trickle_tasks: set[asyncio.Task[None]] = set()
                errors: list[str] = []
                healthy_target = f"http://127.0.0.1:{healthy}/trickle"
                healthy_before = await partner_count(s, healthy)

                async def trickle_one(i: int) -> None:
                    body = {"messageId": f"t-{i}", "targetUrl": healthy_target, "body": {"n": i}}
                    t = time.time()
                    try:
                        async with ts.post(server.base + "/v1/messages", json=body) as response:
                            if response.status != 202:
                                errors.append(f"{response.status}")
                                return
                    except (aiohttp.ClientError, TimeoutError) as e:
                        errors.append(repr(e))
                        return
                    sent[f"t-{i}"] = t

                async def trickle() -> None:
                    start, i = time.perf_counter(), 0
                    while not stopping.is_set():
                        await asyncio.sleep(max(0.0, start + i / args.trickle_rate
                                                - time.perf_counter()))
                        task = asyncio.create_task(trickle_one(i))
                        trickle_tasks.add(task)
                        task.add_done_callback(trickle_tasks.discard)
                        i += 1

                t_start = time.time()
                marks.append(cpu_mark())
                trickler = asyncio.create_task(trickle())
                await asyncio.sleep(args.before)
                t_down = time.time()
                marks.append(cpu_mark())
                target = f"http://127.0.0.1:{outage_port}/hook"
                await submit_all(s, server.base, (
                    {"messageId": f"o-{i}", "targetUrl": target, "body": {"n": i}}
                    for i in range(n)), args.submit_concurrency)
                t_submitted = time.time()
                marks.append(cpu_mark())
                note(f"  {n} submitted in {t_submitted - t_down:.1f} s; partner down until "
                     f"+{args.outage:g} s")
                await asyncio.sleep(max(0.0, t_down + args.outage - time.time()))
                partner = start_partner_on(outage_port)
                t_back = time.time()
                marks.append(cpu_mark())
                note(f"  partner back at +{t_back - t_down:.1f} s")

                async def outage_done() -> bool:
                    return await partner_count(s, outage_port) >= n

                try:
                    await wait_for(outage_done, args.recover_timeout,
                                   f"the {n} outage messages after the partner's return",
                                   interval=0.05)
                except Abort:
                    view = await get_json(s, f"{server.base}/v1/destinations/{dest}")
                    note(f"  ! destination at the timeout: {view}")
                    raise
                t_last = time.time()
                marks.append(cpu_mark())
                stopping.set()
                await trickler
                if trickle_tasks:
                    await asyncio.wait(trickle_tasks, timeout=30)
                t_end = time.time()

                async def trickle_done() -> bool:
                    return await partner_count(s, healthy) - healthy_before >= len(sent)

                await wait_for(trickle_done, 60, "the trickle's last deliveries", interval=0.05)
                await asyncio.sleep(1.0)  # the partner counts before the server records
                outage_views = await views(s, server.base, [f"o-{i}" for i in range(n)],
                                           args.submit_concurrency)
                trickle_views = await views(s, server.base, list(sent), args.submit_concurrency)
                m = await metrics(s, server.base)
                dest_view = await get_json(s, f"{server.base}/v1/destinations/{dest}")
        finally:
            stop(partner)
    # -- figures
    attempts_outage = sum(v["attemptCount"] for v in outage_views.values())
    statuses = Counter(v["status"] for v in outage_views.values())
    per_count = Counter(v["attemptCount"] for v in outage_views.values())
    trickle_attempts = sum(v["attemptCount"] for v in trickle_views.values())
    by_outcome = attempts_by_outcome(m)
    metric_total = sum(by_outcome.values())
    log_attempts = [e for e in server.events(dest) if e.get("message") == "attempt"]
    breaker = [e for e in server.events(dest) if str(e.get("message", "")).startswith("breaker")]
    note(f"  outage messages: {dict(statuses)}; attempts per message histogram "
         f"{dict(sorted(per_count.items()))}")
    note(f"  attempts: views {attempts_outage} (/{n} = {attempts_outage / n:.4f} per message); "
         f"/metrics all {metric_total} {by_outcome} - trickle {trickle_attempts} = "
         f"{metric_total - trickle_attempts}; log lines {len(log_attempts)}")
    problems = server.problems()
    note(f"  server log warnings/errors: {problems or 'none'}")
    errors_logged = [e for e in server.events() if e.get("level") == "ERROR"]
    if errors_logged:
        first = errors_logged[0]
        last_line = str(first.get("exception", "")).strip().splitlines()[-1:]
        note(f"    first error at +{(wall(first['time']) or 0) - t_down:.1f} s: "
             f"{first.get('message')} ({last_line[0] if last_line else ''})")
    if breaker:
        opened = wall(breaker[0]["time"]) or 0.0
        probe_times = [wall(e["time"]) or 0.0 for e in breaker if e["message"] == "breaker probing"]
        first_probe = probe_times[0] if probe_times else float("inf")
        ends = [wall(e["time"]) or 0.0 for e in log_attempts]
        note(f"  attempts ended before the first opening: {sum(t < opened for t in ends)}; "
             f"between it and the first probe: {sum(opened <= t < first_probe for t in ends)}; "
             f"probes: {len(probe_times)}")
    note("  breaker timeline (server log, seconds from the outage's start):")
    closed_at = None
    for e in breaker:
        t = wall(e["time"]) or 0.0
        probe = e.get("nextProbeAt")
        extra_text = f" next probe +{(wall(probe) or 0) - t_down:.1f}" if probe else ""
        note(f"    +{t - t_down:7.1f}  {e['message']:<16} failures {e.get('consecutiveFailures')}"
             f"{extra_text}")
        if e["message"] == "breaker closed" and t >= t_back:
            closed_at = t if closed_at is None else closed_at
    recover = t_last - t_back
    note(f"  return -> last of {n} delivered: {recover:.1f} s"
         + (f" (waiting for the probe {closed_at - t_back:.1f} s, then {n} in "
            f"{t_last - closed_at:.1f} s = {n / (t_last - closed_at):.0f}/s, "
            f"{n / (t_last - closed_at) / ref:.2f} of the client ceiling {ref:.0f}/s)"
            if closed_at is not None else " (no 'breaker closed' after the return in the log)"))
    note(f"  destination at the end: {dest_view}")
    phases = [Phase("before", t_start + 2, t_down), Phase("outage: submitting", t_down,
                                                           t_submitted),
              Phase("outage: rest", t_submitted, t_back)]
    if closed_at is not None:  # the partner is back but the breaker still open, then draining
        phases += [Phase("back, breaker open", t_back, closed_at),
                   Phase("back, draining", closed_at, t_end)]
    else:
        phases.append(Phase("after return", t_back, t_end))
    note(f"  healthy trickle ({len(sent)} sent, {len(errors)} submission errors"
         f"{': ' + str(errors[:3]) if errors else ''}):")
    note(f"    {'phase':<20} {'secs':>6} {'sent':>6} {'delivered/s':>12} {'p50 ms':>8} "
         f"{'p99 ms':>8} {'undelivered':>11} {'others':>6}")
    others = {"before": foreign_cores(marks[0], marks[1]),
              "outage: submitting": foreign_cores(marks[1], marks[2]),
              "outage: rest": foreign_cores(marks[2], marks[3])}
    after_return = foreign_cores(marks[3], marks[4])
    base_figures = None
    note("    (others: cores used by other processes on the machine in the phase; after the "
         "return, over the whole of it)")
    for phase in phases:
        count, rate, p50, p99, missing = phase_figures(phase, sent, trickle_views)
        if base_figures is None:
            base_figures = (rate, p50, p99)
        note(f"    {phase.name:<20} {phase.end - phase.start:6.1f} {count:6d} {rate:12.1f} "
             f"{p50:8.1f} {p99:8.1f} {missing:11d} {others.get(phase.name, after_return):6.2f}")
        if phase.name != "before":
            b_rate, b_p50, b_p99 = base_figures
            summary(f"outage cd={tag}", f"trickle {phase.name}: delivered/s, p50, p99",
                    f"{rate:.1f}/s {p50:.0f} {p99:.0f} ms vs {b_rate:.1f}/s {b_p50:.0f} "
                    f"{b_p99:.0f} ms", f"{rate / b_rate:.2f} {p50 / b_p50:.1f}x "
                    f"{p99 / b_p99:.1f}x", "")
    summary(f"outage cd={tag}", "attempts per outage message", f"{attempts_outage}/{n}",
            f"{attempts_outage / n:.4f}", "< 1.5")
    summary(f"outage cd={tag}", "ERROR lines in the server log", str(len(errors_logged)), "",
            "0")
    summary(f"outage cd={tag}", "return -> last delivered",
            f"{recover:.1f} s" + (f" ({closed_at - t_back:.1f} s to the probe)"
                                  if closed_at is not None else ""),
            f"{n / (t_last - closed_at) / ref:.2f} of ceiling after close"
            if closed_at is not None else "", "")


async def outage(args: argparse.Namespace, workdir: Path) -> None:
    note(f"\n== outage: {args.outage_messages} messages to a partner down {args.outage:g} s "
         f"(connection refused), trickle of {args.trickle_rate:g}/s to a healthy one ==")
    healthy, healthy_port = start_partner()
    try:
        ref = await reference(healthy_port, args)
        note(f"reference: delivery client alone {ref:.0f} requests/s")
        for cooldown in args.cooldowns:
            try:
                await outage_run(args, workdir, healthy_port, cooldown, ref)
            except Abort as e:
                note(f"  ! ABORTED: {e}")
                summary("outage", f"cooldown {cooldown}", f"ABORTED: {e}")
    finally:
        stop(healthy)


# -- 3. many destinations ------------------------------------------------------------------


@dataclass
class ManyRun:
    rate: float  # delivered/s, first submission -> last delivery
    accepted_rate: float  # accepted/s, first submission -> last 202
    backlog: int  # not yet delivered when the last submission was accepted
    drain_rate: float  # delivered/s from the last 202 to the last delivery
    rss_mib: float
    foreign: float  # cores used by other processes meanwhile


async def pause(s: aiohttp.ClientSession, base: str, name: str, paused: bool) -> None:
    async with s.patch(f"{base}/v1/destinations/{name}", json={"paused": paused}) as response:
        if response.status != 200:
            raise Abort(f"PATCH destination {name}: {response.status} {await response.text()}")


async def many_run(args: argparse.Namespace, workdir: Path, partner: int, label: str,
                   destinations: int, total: int, cap: int, *, paused: bool = False) -> ManyRun:
    """`paused`: the one destination is paused while everything is submitted, then
    resumed, so that the drain rate is the delivery side's alone, with no submissions."""
    extra = ["--destination-concurrency", str(cap)]
    wait_quiet(args.quiet_below, args.quiet_timeout, label)
    with Server(label, workdir, extra, args.keep_db) as server:
        async with session(args.submit_concurrency + 8) as s:
            if paused:
                await pause(s, server.base, "d0", True)
            before = await partner_count(s, partner)
            target = f"http://127.0.0.1:{partner}/hook"
            mark = cpu_mark()
            t0 = time.perf_counter()
            await submit_all(s, server.base, (
                {"messageId": f"m-{i}", "targetUrl": target, "body": {"n": i},
                 "destination": f"d{i % destinations}"} for i in range(total)),
                args.submit_concurrency)
            accepted = time.perf_counter()
            if paused:
                mark = cpu_mark()
                await pause(s, server.base, "d0", False)
                accepted = time.perf_counter()
            backlog = total - (await partner_count(s, partner) - before)

            async def delivered() -> bool:
                return await partner_count(s, partner) - before >= total

            done = await wait_for(delivered, args.wait_timeout, f"{total} deliveries ({label})")
            foreign = foreign_cores(mark, cpu_mark())
            attempts = await settled_attempts(s, server.base, total)
    if sum(attempts.values()) != total:
        note(f"  ! {label}: {attempts} attempts for {total} messages")
    if server.problems():
        note(f"  ! {label} server log: {server.problems()}")
    return ManyRun(total / (done - t0), total / (accepted - t0), backlog,
                   backlog / max(done - accepted, 1e-9), server.rss_mib, foreign)


async def many(args: argparse.Namespace, workdir: Path) -> None:
    default = load({}, environ={}).destination_concurrency
    many_total = args.destinations * args.per_destination
    note(f"\n== many: {args.destinations} destinations x {args.per_destination} against 1 x "
         f"{args.single_messages}; then 1 destination at --destination-concurrency "
         f"{', '.join(map(str, args.sweep))}; reference: 1 destination at {default} (the default), "
         f"run before and after each case ==")
    partner, port = start_partner()
    try:
        ceiling_rate = await reference(port, args)
        note(f"delivery client alone: {ceiling_rate:.0f} requests/s")

        foreign_seen: list[float] = []

        def runner(destinations: int, total: int, cap: int, paused: bool = False) -> Measure:
            async def run(label: str) -> tuple[float, bool]:
                for tries in range(args.run_tries):
                    name = label if tries == 0 else f"{label}-again{tries}"
                    r = await many_run(args, workdir, port, name, destinations, total, cap,
                                       paused=paused)
                    note(f"  {name:<16} delivered {r.rate:4.0f}/s  accepted "
                         f"{r.accepted_rate:4.0f}/s  then {r.backlog:5d} left, drained at "
                         f"{r.drain_rate:4.0f}/s  peak RSS {r.rss_mib:.0f} MiB  others "
                         f"{r.foreign:.2f} cores")
                    if r.foreign <= args.max_others or tries == args.run_tries - 1:
                        break
                    note("    (run discarded: other processes were busy)")
                foreign_seen.append(r.foreign)
                return r.drain_rate if paused else r.rate, r.foreign <= args.max_others
            return run

        cases = [(f"many-{args.destinations}", runner(args.destinations, many_total,
                                                                default))]
        cases += [(f"single-{c}", runner(1, args.single_messages, c))
                  for c in args.sweep if c != default]
        ratios, rates, refs = await bracketed(runner(1, args.single_messages, default), cases,
                                              args.repeats, f"single-{default}")
        report("many", f"single-{default}", refs, ratios, rates,
               {f"many-{args.destinations}": ">= 0.80"}, ceiling_rate, foreign_seen)
        if args.drain:
            note(f"\n  -- the delivery side alone: 1 destination paused while its "
                 f"{args.single_messages} are submitted, then resumed; drain rate at each "
                 f"--destination-concurrency, against {default} --")
            foreign_seen.clear()
            cases = [(f"drain-{c}", runner(1, args.single_messages, c, True))
                     for c in args.sweep if c != default]
            ratios, rates, refs = await bracketed(runner(1, args.single_messages, default,
                                                         True),
                                                  cases, args.repeats, f"drain-{default}")
            report("many", f"drain-{default}", refs, ratios, rates, {}, ceiling_rate, foreign_seen)
    finally:
        stop(partner)


Measure = Callable[[str], Awaitable[tuple[float, bool]]]  # label -> (rate, undisturbed)


async def bracketed(
    reference_run: Measure, cases: list[tuple[str, Measure]], repeats: int,
    reference_name: str,
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Run reference, case, reference, case, ... reference, each on a fresh server: a
    case's ratio is to the mean of the reference runs just before and after it (only the
    undisturbed one when the other was disturbed by other processes), so that the
    machine's speed drifting between runs cancels to first order. Returns the ratios and
    rates of each case, and every reference rate."""
    refs = [await reference_run(f"{reference_name}-0")]
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    for rep in range(repeats):
        for name, run in cases if rep % 2 == 0 else cases[::-1]:
            rate, clean = await run(f"{name}-{rep}")
            refs.append(await reference_run(f"{reference_name}-{len(refs)}"))
            neighbours = [r for r, ok in refs[-2:] if ok] or [r for r, _ in refs[-2:]]
            reference_rate = statistics.mean(neighbours)
            ratio = rate / reference_rate
            note(f"    -> {name}-{rep}: {rate:.0f} / {reference_rate:.0f} (mean of "
                 f"{len(neighbours)} {reference_name} run(s) beside it) = {ratio:.3f}"
                 f"{'' if clean else '  (this run was disturbed by other processes)'}")
            ratios.setdefault(name, []).append(ratio)
            rates.setdefault(name, []).append(rate)
    return ratios, rates, [r for r, _ in refs]


def report(scenario: str, reference_name: str, refs: list[float], ratios: dict[str, list[float]],
           rates: dict[str, list[float]], targets: dict[str, str], ceiling_rate: float,
           foreign: list[float]) -> None:
    drift = max(refs) / min(refs)
    note(f"\n  other processes on the machine used {min(foreign):.2f}-{max(foreign):.2f} cores "
         f"during the runs (of {os.cpu_count()})")
    note(f"\n  {'case':<16} {'delivered/s':>11} {'ratio':>7} {'ratios (each vs its brackets)':<32}"
         f" {'vs ceiling':>10}  target")
    ref_rate = statistics.median(refs)
    note(f"  {reference_name:<16} {ref_rate:11.0f} {1:7.3f} "
         f"{'reference, ' + str(len(refs)) + ' runs, max/min ' + f'{drift:.2f}':<32} "
         f"{ref_rate / ceiling_rate:10.3f}")
    summary(scenario, f"{reference_name} (reference) delivered/s",
            f"{ref_rate:.0f} (median of {len(refs)}; max/min {drift:.2f}; others "
            f"{min(foreign):.2f}-{max(foreign):.2f} cores)", "1", "")
    for name, values in ratios.items():
        ratio = statistics.median(values)
        rate = statistics.median(rates[name])
        each = " ".join(f"{v:.3f}" for v in values)
        target = targets.get(name, "")
        note(f"  {name:<16} {rate:11.0f} {ratio:7.3f} {each:<32} {rate / ceiling_rate:10.3f}  "
             f"{target}")
        summary(scenario, f"{name} delivered/s vs {reference_name}",
                f"{rate:.0f} vs {ref_rate:.0f}", f"{ratio:.3f}"
                + (f" (median of {len(values)})" if len(values) > 1 else ""), target)


# -- main ----------------------------------------------------------------------------------


def floats(text: str) -> list[float | None]:
    return [float(x) if x not in ("", "default") else None for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["isolation", "outage", "many", "all"],
                        default="all")
    parser.add_argument("--submit-concurrency", type=int, default=64,
                        help="submissions in flight")
    parser.add_argument("--repeats", type=int, default=1,
                        help="isolation and many: runs of each case, each between two runs "
                             "of the reference")
    parser.add_argument("--wait-timeout", type=float, default=300,
                        help="longest wait for a batch's deliveries (s)")
    parser.add_argument("--ceiling-requests", type=int, default=5000)
    parser.add_argument("--hang-messages", type=int, default=500)
    parser.add_argument("--healthy-messages", type=int, default=2000)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--hang-destinations", type=int, default=1,
                        help="isolation: named destinations the hanging messages are spread "
                             "over (1: the partner's host:port)")
    parser.add_argument("--hang-body-kib", type=int, default=0,
                        help="isolation: a string body of this size for each hanging message "
                             "(0: a small JSON body)")
    parser.add_argument("--outage-messages", type=int, default=10000)
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the port is closed")
    parser.add_argument("--before", type=float, default=20.0,
                        help="seconds of trickle before the outage")
    parser.add_argument("--trickle-rate", type=float, default=50.0)
    parser.add_argument("--recover-timeout", type=float, default=900.0,
                        help="longest wait after the partner's return (s)")
    parser.add_argument("--cooldowns", type=floats, default=[None, 5.0],
                        help="--breaker-cooldown values, comma separated; 'default': none "
                             "given (30 s). Default: default,5")
    parser.add_argument("--destinations", type=int, default=1000)
    parser.add_argument("--per-destination", type=int, default=10)
    parser.add_argument("--single-messages", type=int, default=10000)
    parser.add_argument("--sweep", type=lambda t: [int(x) for x in t.split(",")],
                        default=[16, 32, 64, 128, 256])
    parser.add_argument("--no-drain", dest="drain", action="store_false",
                        help="many: skip the drain runs (paused backlog, then resumed)")
    parser.add_argument("--quiet-below", type=float, default=0.25,
                        help="before each run, wait until other processes use fewer cores "
                             "than this (0: do not wait)")
    parser.add_argument("--quiet-timeout", type=float, default=120.0,
                        help="longest such wait (s); then the run goes ahead, with a note")
    parser.add_argument("--max-others", type=float, default=0.3,
                        help="isolation and many: a run during which other processes used "
                             "more cores than this is discarded and run again")
    parser.add_argument("--run-tries", type=int, default=3,
                        help="isolation and many: most runs of one measurement")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where server logs (and databases) go; default: a new temp dir")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    # a SIGTERM unwinds like an exception, so that the servers and partners are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-destinations-"))
    workdir.mkdir(parents=True, exist_ok=True)
    note(f"machine: {os.cpu_count()} cores; scenario {args.scenario}; logs in {workdir}")
    scenarios = {"isolation": isolation, "outage": outage, "many": many}
    chosen = list(scenarios) if args.scenario == "all" else [args.scenario]
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        try:
            asyncio.run(scenarios[name](args, workdir))
        except Abort as e:
            note(f"! {name} ABORTED: {e}")
            summary(name, "ABORTED", str(e))
        note(f"({name} took {time.perf_counter() - t0:.0f} s)")
    note(f"\n== summary ({time.perf_counter() - started:.0f} s; logs in {workdir}) ==")
    widths = [max(len(row[i]) for row in [*SUMMARY, ("scenario", "figure", "value", "ratio",
                                                     "target")]) for i in range(5)]
    for row in [("scenario", "figure", "value", "ratio", "target"), *SUMMARY]:
        note("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
