"""What a rate of notifications needs of AWS, and costs: a capacity model that runs.

    .venv/bin/python bench/aws_capacity.py [--rate 100000] [--batch-share 0] [--retry-share 0]
        [--large-share 0] [--sender-share 0.1] [--destination-share 0.1] [--partner-ms 200]
        [--with-increases] [--messages 100]    # --help: every assumption

1. Measured. moto's server on 127.0.0.1, metered (tests/aws/metering.py): every request it
   answers is counted, by service and operation, with its bytes; DynamoDB's write and read
   units are computed from the items' sizes before and after each write, for the table and
   for each index the write touches, by the index's key schema and projection (as
   tests/aws/moto.py creates them, after infra/notify_relay_infra/storage.py). The real
   handlers (tests/aws/scenarios.py: API Gateway events into the API Lambda; the table's
   stream into the outbox Lambda, which sends to SQS what the API stored; an SQS event
   source polling batches of the stack's size, read from infra/, into the worker Lambda),
   warmed first, deliver to a partner on 127.0.0.1 in four scenarios: (a) single submits,
   first try; (b) batches of 100, first try; (c) single submits, a 503 then a 200; (d)
   single submits of a body kept in S3. Each count is divided by the scenario's
   notifications. The outbox's calls count with the API side (they queue what the API
   stored); Lambda's reads of the stream are left out (free to a Lambda trigger).
2. Computed, for `--rate` notifications a second of the mix the shares give: each limit
   (needed, limit, the rate up to which it holds), the first limit that breaks, and the
   cost per million notifications. What depends on how full the batches are at the rate
   is computed from the records, not taken from the scenarios (where a batch holds what
   the harness found at a poll): the worker's invocations (full batches of the stack's
   size), and the outbox's invocations and sends (below).

The outbox. Its event source (infra: batches of up to 100, parallelization factor 10,
filtered to the writes that queue a message) reads each shard of the table's stream and
invokes as soon as records are there (no batching window): Lambda polls a shard 4 times a
second, so an invocation carries what one shard queued in a quarter of a second, split over
the parallelization factor's concurrent batches, at least one record and at most 100. The
shards: DynamoDB keeps about one stream shard per table partition, and a partition holds
at most 1,000 WRU/s, 3,000 RRU/s and about 10 GB; the estimate is the larger of the
partitions the table's units need and those its items need once `--retention-days` of
them are kept (`--stream-shards` overrides). Many shards mean few records each, hence one
invocation and one SendMessageBatch per notification or close to it.

The model is linear in the rate: every need below is the rate times a count per
notification (measured) times a duration (assumed, flags below). Lambda durations are not
measured (moto on loopback says nothing of DynamoDB's latency in a region): an API
invocation of one submission takes `--api-ms`, of a batch of 100 `--batch-api-ms`; an
outbox invocation `--outbox-ms`; a worker invocation the slowest partner of its batch
(`--partner-ms`) plus its AWS calls (the measured calls per record times the batch),
`--aws-concurrency` at a time (botocore's 10 pooled connections a client), `--aws-call-ms`
each.

The work queue's shards (`work_queues` of the prod stage, one event source each): a
destination's entries all go to one shard, the others spread by a hash, so the busiest shard
carries the largest destination's share plus an even part of the rest, and the per-queue
limits (an event source's batches, a queue's in-flight messages) are checked on it.

Kinds of limit: `hard`, AWS's, which no quota increase lifts (a partition key's
throughput, an SQS event source's 1,000 concurrent batches, a standard queue's in-flight
messages); `quota`, AWS's default, raised on request; `setting`, ours, changed by a deploy or
an API call (the prod stage's in infra/notify_relay_infra/config.py, a destination's
maxConcurrency); `design`, ours, a constant of the code (a destination's maxConcurrency is
at most 1,000). Exit status 1 when a limit does not hold at the rate; with
`--with-increases` only hard and design limits count (quotas and settings taken as
raised). 0 otherwise.

Prices and quotas: the constants below, us-east-1 on-demand list prices (arm64 Lambda,
first tiers) and AWS's documented defaults, as of this file: the date they were last
checked against AWS's pricing pages and Service Quotas is not known; check them before
relying on a figure. Not counted: CloudWatch (logs, EMF metrics, alarms), data transfer to
partners, KMS, Secrets Manager, free tiers, volume discounts; DynamoDB Streams' read
requests, which cost nothing when a Lambda trigger makes them.
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.aws: the moto server, the meter, the scenarios

from tests.aws import scenarios  # noqa: E402
from tests.aws.metering import STORAGE_OVERHEAD, Call, Meter, Tally, tally  # noqa: E402
from tests.aws.moto import create_resources, start_moto  # noqa: E402
from tests.partner import Partner  # noqa: E402

from notify_relay.adapters.aws import dynamodb  # noqa: E402
from notify_relay.adapters.aws.destinations import PENDING_SHARDS  # noqa: E402
from notify_relay.config import load  # noqa: E402
from notify_relay.domain.destination import MAX_CONCURRENCY_LIMIT  # noqa: E402

# -- prices, as of this file (us-east-1, on demand) -------------------------------------------
PRICE_REST_API = 3.50e-6  # per request (first 333 M a month)
PRICE_HTTP_API = 1.00e-6  # per request of up to 512 KB (first 300 M a month)
PRICE_LAMBDA_GB_S = 0.0000133334  # arm64, per GB-second (first 6 billion GB-s a month)
PRICE_LAMBDA_REQUEST = 0.20e-6
PRICE_SQS_REQUEST = 0.40e-6  # standard queue; each 64 KB of payload is one request
PRICE_WRU = 0.625e-6  # DynamoDB on demand, per write request unit
PRICE_RRU = 0.125e-6  # ... per read request unit
PRICE_DYNAMODB_GB_MONTH = 0.25  # standard table class storage
PRICE_S3_PUT = 0.005e-3  # PUT, COPY, POST, LIST: per request
PRICE_S3_GET = 0.0004e-3  # GET and the others
PRICE_S3_GB_MONTH = 0.023  # S3 Standard, first 50 TB

# -- AWS's default quotas and hard limits, as of this file --------------------------------------
APIGW_ACCOUNT_RPS = 10_000  # quota: REST and HTTP APIs of an account, per region
LAMBDA_ACCOUNT_CONCURRENCY = 1_000  # quota, per region
ESM_MAX_CONCURRENT_BATCHES = 1_000  # hard: an SQS event source's batches at once
SQS_IN_FLIGHT = 120_000  # hard: a standard queue's messages received and not deleted
DYNAMODB_TABLE_UNITS = 40_000  # quota: per second, per table and per index, on demand
PARTITION_WRU = 1_000  # hard: per second, per partition key value (table or index)
PARTITION_RRU = 3_000  # hard: strongly consistent reads per second, per partition key value
PARTITION_BYTES = 10 * 10**9  # a table partition holds about 10 GB (its items' storage)
STREAM_POLLS = 4  # Lambda reads each shard of a DynamoDB stream 4 times a second
SQS_SEND_BATCH = 10  # entries in one SendMessageBatch (adapters/aws/outbox.py: SEND_BATCH)
CACHE_SECONDS = 1.0  # a worker re-reads a destination's record at most once a second
FLUSH_SECONDS = 30.0  # ... and writes its statistics at most once every 30 s
MILLION = 1_000_000
# how many partition keys each index spreads a sender's (or a destination's) writes over
SENDER_SHARDS: int = dynamodb.SENDER_SHARDS  # the list indexes


def prod_stage() -> dict[str, int]:
    """The prod stage's numeric settings, read from infra/notify_relay_infra/config.py
    without importing the CDK."""
    tree = ast.parse((ROOT / "infra/notify_relay_infra/config.py").read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "StageConfig"
                and any(k.arg == "name" and isinstance(k.value, ast.Constant)
                        and k.value.value == "prod" for k in node.keywords)):
            return {k.arg: k.value.value for k in node.keywords
                    if k.arg and isinstance(k.value, ast.Constant)
                    and isinstance(k.value.value, int)}
    raise SystemExit("no prod StageConfig in infra/notify_relay_infra/config.py")


@dataclass(frozen=True)
class Functions:
    """What infra/notify_relay_infra/functions.py sets that the model needs."""

    worker_batch: int  # the SQS event source's batch size
    outbox_batch: int  # the stream event source's
    outbox_parallelization: int  # its concurrent batches per shard
    outbox_memory_mb: int
    reconciler_memory_mb: int


def functions() -> Functions:
    """Read from infra/notify_relay_infra/functions.py without importing the CDK: the
    keywords of the `SqsEventSource` and `DynamoEventSource` calls, the memory (third
    argument) of the `function("Outbox", ...)` and `function("Reconciler", ...)` calls."""
    path = ROOT / "infra/notify_relay_infra/functions.py"
    sources: dict[str, dict[str, int]] = {}
    memory: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("SqsEventSource", "DynamoEventSource"):
            sources[name] = {k.arg: k.value.value for k in node.keywords
                             if k.arg and isinstance(k.value, ast.Constant)
                             and isinstance(k.value.value, int)}
        elif (name == "function" and len(node.args) > 2
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[2], ast.Constant)
              and isinstance(node.args[2].value, int)):
            memory[str(node.args[0].value)] = node.args[2].value
    try:
        return Functions(
            worker_batch=sources["SqsEventSource"]["batch_size"],
            outbox_batch=sources["DynamoEventSource"]["batch_size"],
            outbox_parallelization=sources["DynamoEventSource"].get(
                "parallelization_factor", 1),
            outbox_memory_mb=memory["Outbox"], reconciler_memory_mb=memory["Reconciler"])
    except KeyError as missing:
        raise SystemExit(f"{path}: no {missing} where this model looks for it "
                         f"(event sources {sources}, memory {memory})") from None


# -- 1. measuring ---------------------------------------------------------------------------------

def measure(messages: int, body_bytes: int, large_bytes: int, batch_size: int
            ) -> tuple[dict[str, scenarios.Measured], list[Call]]:
    """The four scenarios, the worker's event source handing out batches of `batch_size`,
    and the calls of one reconciler run."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    meter = Meter()
    server, endpoint = start_moto(wrap=meter.wrap)
    try:
        aws = create_resources(endpoint)
        body = scenarios.notification_body(body_bytes)
        with Partner() as partner, scenarios.Rig(aws, meter, partner,
                                                 batch_size=batch_size) as rig:
            rig.warm()
            measured = {
                "a": scenarios.single(rig, messages, body),
                "b": scenarios.batched(rig, 2 * scenarios.BATCH, body),
                "c": scenarios.retried(rig, max(10, messages // 2), body),
                "d": scenarios.large(rig, 10, large_bytes),
            }
            mark = meter.mark()
            rig.reconcile()
            reconciler = [c for c in meter.since(mark) if c.phase == "reconciler"]
        return measured, reconciler
    finally:
        server.stop()


# -- 2. the model ---------------------------------------------------------------------------------

@dataclass
class Limit:
    name: str
    kind: str  # hard, quota, setting, design (module docstring)
    needed: float
    limit: float
    unit: str
    rate: float  # the notifications/s the need was computed for

    @property
    def holds(self) -> bool:
        return self.needed <= self.limit

    @property
    def holds_to(self) -> float:
        """The rate up to which it holds (the need is proportional to the rate)."""
        return math.inf if self.needed <= 0 else self.rate * self.limit / self.needed


@dataclass
class Outbox:
    """The outbox at the rate (module docstring): its stream's shards, its batches."""

    shards: int
    shards_by_units: int  # the partitions the table's units need (a table not yet full)
    shards_by_storage: int  # ... its items, once `--retention-days` of them are kept
    queued: float  # records it queues per notification (measured: its SQS entries)
    per_shard: float  # records queued a second on one shard
    records: float  # records an invocation
    invocations: float  # per notification
    sends: float  # SendMessageBatch calls per notification
    seconds: float  # one invocation
    concurrency: float  # executions at once


@dataclass
class Model:
    per_notification: Tally  # the mix's counts per notification, the outbox's as computed
    limits: list[Limit]
    costs: list[tuple[str, float]]  # $ per million notifications
    notes: list[str]
    worker_seconds: float  # one worker invocation, as computed
    outbox: Outbox
    concurrency: dict[str, float]  # Lambda executions at once, by function


def outbox_calls(m: scenarios.Measured) -> Tally:
    """The outbox's own calls in a scenario (its SQS sends), per notification."""
    calls = [c for c in m.calls if c.phase == "outbox"]
    return tally(calls, lambda call: call.table) * (1 / m.notifications)


def mix(m: dict[str, scenarios.Measured], batch: float, retry: float, large: float
        ) -> tuple[Tally, Tally]:
    """Counts per notification of the mix: submitted singly or by 100, delivered at the
    first try or after one failure, bodies inline or in S3 (the S3 scenario's difference
    over a single submit, added for its share). And the outbox's calls as measured, which
    the first includes with the API side: the outbox queues what a notification's writes
    mark queued, whoever wrote them, so each scenario's difference counts for its share."""
    a, b, c, d = m["a"], m["b"], m["c"], m["d"]
    api = a.api * (1 - batch) + b.api * batch + (d.api + a.api * -1) * large
    delivery = (a.delivery * (1 - retry) + c.delivery * retry
                + (d.delivery + a.delivery * -1) * large)
    o = {k: outbox_calls(x) for k, x in m.items()}
    outbox = (o["a"] + (o["b"] + o["a"] * -1) * batch + (o["c"] + o["a"] * -1) * retry
              + (o["d"] + o["a"] * -1) * large)
    return api + delivery, outbox


def shards_needed(rate: float, table_wru: float, table_rru: float, item_bytes: float,
                  retention_days: float) -> tuple[int, int]:
    """The table's partitions, hence its stream's shards (about one a partition): for its
    units per notification, and for its items once `retention_days` of them are kept."""
    by_units = math.ceil(max(rate * table_wru / PARTITION_WRU,
                             rate * table_rru / PARTITION_RRU, 1))
    by_storage = math.ceil(rate * 86_400 * retention_days * item_bytes / PARTITION_BYTES)
    return by_units, by_storage


def outbox_batches(rate: float, queued: float, shards: int, batch: int, parallel: int
                   ) -> tuple[float, float, float]:
    """(records queued a second on a shard, records an invocation, invocations per
    notification): Lambda reads a shard STREAM_POLLS times a second and invokes at once,
    a poll's records split over `parallel` batches; at least one record, at most `batch`."""
    per_shard = rate * queued / shards
    records = min(batch, max(1.0, per_shard / (STREAM_POLLS * parallel)))
    return per_shard, records, queued / records if queued else 0.0


def busiest_shard(shards: int, destination_share: float) -> float:
    """The busiest work queue shard's share of the deliveries: the largest destination's
    (all of it on one shard) and an even part of the rest (spread by the hash)."""
    if shards <= 1:
        return 1.0
    return destination_share + (1 - destination_share) / shards


def model(m: dict[str, scenarios.Measured], args: argparse.Namespace,
          stage: dict[str, int], infra: Functions) -> Model:
    rate = args.rate
    measured, measured_outbox = mix(m, args.batch_share, args.retry_share, args.large_share)
    a = m["a"]
    notes: list[str] = []
    limits: list[Limit] = []

    # the outbox: what it queues per notification is measured; its batches, hence its
    # invocations and sends, depend on the stream's shards at the rate (module docstring)
    queued = (measured_outbox["records sqs SendMessageBatch"]
              + measured_outbox["records sqs SendMessage"])
    final = (1 - args.large_share) * ((1 - args.retry_share) * a.final_size
                                      + args.retry_share * m["c"].final_size)
    item_bytes = final + args.large_share * m["d"].final_size + STORAGE_OVERHEAD
    by_units, by_storage = shards_needed(rate, measured["wru messages"],
                                         measured["rru messages"], item_bytes,
                                         args.retention_days)
    shards = args.stream_shards or max(by_units, by_storage)
    parallel = infra.outbox_parallelization
    per_shard, records_per_outbox, outbox_invocations = outbox_batches(
        rate, queued, shards, infra.outbox_batch, parallel)
    sends = outbox_invocations * math.ceil(records_per_outbox / SQS_SEND_BATCH)
    outbox_seconds = args.outbox_ms / 1000
    outbox_concurrency = rate * outbox_invocations * outbox_seconds
    outbox = Outbox(shards, by_units, by_storage, queued, per_shard, records_per_outbox,
                    outbox_invocations, sends, outbox_seconds, outbox_concurrency)
    # the counts with the outbox's as computed rather than as the harness batched them
    n = measured + measured_outbox * -1
    n.counts["invocations outbox"] = outbox_invocations
    n.add("calls sqs SendMessageBatch", sends)
    n.add("billed sqs", sends)  # a few entries of a few hundred bytes: one 64 KB chunk
    n.add("records sqs SendMessageBatch", queued)
    n.add("bytes sqs payload", measured_outbox["bytes sqs payload"])
    _, fresh_records, fresh_invocations = outbox_batches(
        rate, queued, by_units, infra.outbox_batch, parallel)
    notes.append(
        f"outbox: {shards:,} stream shards ("
        + ("--stream-shards" if args.stream_shards else
           f"the larger of {by_units:,} for the table's units and {by_storage:,} for "
           f"{args.retention_days:g} days of {item_bytes:,.0f}-byte items, at about 10 GB "
           "a partition")
        + f"); records queued a second on each: {per_shard:.3g}, records an invocation: "
        f"{records_per_outbox:.3g}; per notification: {outbox_invocations:.3g} "
        f"invocations and {sends:.3g} SendMessageBatch calls (the scenarios measured "
        f"{measured['invocations outbox']:.3g} and "
        f"{measured_outbox['calls sqs SendMessageBatch']:.3g}, as the harness batched). "
        f"A table with only the {by_units:,} partitions its units need: records an "
        f"invocation: {fresh_records:.3g}, invocations per notification: "
        f"{fresh_invocations:.3g}.")

    def limit(name: str, kind: str, needed: float, bound: float, unit: str) -> None:
        limits.append(Limit(name, kind, needed, bound, unit, rate))

    # API Gateway and the API Lambda
    requests = rate * n["requests apigw"]
    limit("API Gateway requests (account, region)", "quota", requests, APIGW_ACCOUNT_RPS, "/s")
    limit("API Gateway stage throttle (prod)", "setting", requests, stage["api_rate_limit"],
          "/s")
    api_seconds = ((1 - args.batch_share) * a.api["invocations api"] * args.api_ms
                   + args.batch_share * m["b"].api["invocations api"] * args.batch_api_ms) / 1000
    api_concurrency = rate * api_seconds
    # the worker: full batches at this rate, their records delivered concurrently
    records = n["records worker"]
    batch = args.event_source_batch
    worker_invocations = records / batch
    calls_per_record = n["aws calls by the worker"] / records
    worker_seconds = (args.partner_ms + math.ceil(batch * calls_per_record / args.aws_concurrency)
                      * args.aws_call_ms) / 1000
    worker_concurrency = rate * worker_invocations * worker_seconds
    limit("Lambda concurrency (account: API + outbox + worker + reconciler)", "quota",
          api_concurrency + outbox_concurrency + worker_concurrency + 1,
          LAMBDA_ACCOUNT_CONCURRENCY, "")
    limit(f"outbox: batches at once on a stream shard (parallelization factor {parallel}, "
          "at most 10)", "hard" if parallel >= 10 else "setting",
          outbox_concurrency / shards, parallel, "")
    work_shards = args.work_queues or stage["work_queues"]
    busiest = busiest_shard(work_shards, args.destination_share)
    on = (f"the busiest of {work_shards} shards ({busiest:.1%}: the largest destination and "
          f"1/{work_shards} of the rest)" if work_shards > 1 else "the one work queue")
    limit(f"SQS event source: concurrent batches of {batch} (at most 1,000), {on}", "hard",
          worker_concurrency * busiest, ESM_MAX_CONCURRENT_BATCHES, "")
    if stage["worker_max_concurrency"] < ESM_MAX_CONCURRENT_BATCHES:
        limit(f"SQS event source: MaximumConcurrency (prod), {on}", "setting",
              worker_concurrency * busiest, stage["worker_max_concurrency"], "")
    limit(f"SQS in-flight messages (standard queue), {on}", "hard",
          rate * records * worker_seconds * busiest, SQS_IN_FLIGHT, "")
    # one destination's attempts in flight: its slots (a lease each, adapters/aws)
    in_flight = rate * args.destination_share * records * args.partner_ms / 1000
    label = f"largest destination ({args.destination_share:.0%})"
    limit(f"attempts in flight at the {label}: default maxConcurrency", "setting",
          in_flight, load({}, environ={}).destination_concurrency, "")
    limit(f"attempts in flight at the {label}: maxConcurrency's maximum", "design",
          in_flight, MAX_CONCURRENCY_LIMIT, "")

    # DynamoDB: what scales with the rate, then what scales with the worker environments
    # (each refreshes the busiest destination's record every second, writes its statistics
    # every 30 s: one destination per environment, the common case at this rate)
    record_reads = worker_concurrency / CACHE_SECONDS
    record_writes = worker_concurrency / FLUSH_SECONDS
    reads = sum((x.per_environment for x in m.values()), Tally())
    per_record_read = (reads["rru destination records"]
                       / reads["calls dynamodb GetItem destination records"]
                       if reads["calls dynamodb GetItem destination records"] else 1.0)
    tables = {"messages": ["messages"],
              "destinations": ["slots", "destination records"]}
    for table, roles in tables.items():
        wru = rate * sum(n[f"wru {r}"] for r in roles)
        rru = rate * sum(n[f"rru {r}"] for r in roles)
        if table == "destinations":
            wru += record_writes
            rru += record_reads * per_record_read
        limit(f"DynamoDB {table}: write units", "quota", wru, DYNAMODB_TABLE_UNITS, "/s")
        limit(f"DynamoDB {table}: read units", "quota", rru, DYNAMODB_TABLE_UNITS, "/s")
    indexes = sorted({name.split(" ", 1)[1] for name in n.counts if name.startswith("wru ")
                      and "/" in name})
    for index in indexes:
        limit(f"DynamoDB {index}: write units", "quota", rate * n[f"wru {index}"],
              DYNAMODB_TABLE_UNITS, "/s")
    # hot partition keys. An index's key is the sender's, the destination's or nobody's
    # in particular, spread over a number of shards (adapters/aws/dynamodb.py); the
    # measured writes are grouped by key less its shard suffix, and a group's busiest
    # shard takes its share of them (the shards are picked by a hash of the message)
    shares = {"sender": args.sender_share, "destination": args.destination_share, "all": 1.0}
    scope = {"messages/bySender": ("sender", SENDER_SHARDS),
             "messages/bySenderStatus": ("sender", SENDER_SHARDS),
             "messages/destPending": ("destination", PENDING_SHARDS)}
    for index in indexes:
        if index not in scope:
            notes.append(f"{index}: an index this model does not know; its writes are "
                         "taken as all on one key")
        who, shards = scope.get(index, ("all", 1))
        groups: dict[str, float] = {}
        for name, units in n.matching(f"key wru {index} ").items():
            key = name.removeprefix(f"key wru {index} ")
            group = re.sub(r"(#|^U)\d+$", r"\1", key) if shards > 1 else key
            groups[group] = groups.get(group, 0.0) + units
        per_key = max(groups.values(), default=0.0) / shards
        label = {"sender": f"largest sender ({args.sender_share:.0%})",
                 "destination": f"largest destination ({args.destination_share:.0%})",
                 "all": "all senders"}[who]
        keys = "1 key" if shards == 1 else f"{shards} keys"
        limit(f"DynamoDB {index}: busiest key, {label}, {keys}", "hard",
              rate * shares[who] * per_key, PARTITION_WRU, " WRU/s")
    destination_rate = rate * args.destination_share
    limit(f"DynamoDB destination record: reads of the largest destination's "
          f"({args.destination_share:.0%})", "hard",
          min(record_reads, destination_rate) * per_record_read, PARTITION_RRU, " RRU/s")
    limit("DynamoDB destination record: writes by attempts (failures) of the largest "
          "destination", "hard", destination_rate * n["wru destination records"],
          PARTITION_WRU, " WRU/s")

    # cost per million notifications
    costs: list[tuple[str, float]] = []
    costs.append(("API Gateway REST API", MILLION * n["requests apigw"] * PRICE_REST_API))
    api_gb = stage["api_memory_mb"] / 1024
    costs.append(("API Lambda (duration + requests)",
                  MILLION * (api_seconds * api_gb * PRICE_LAMBDA_GB_S
                             + n["invocations api"] * PRICE_LAMBDA_REQUEST)))
    outbox_gb = infra.outbox_memory_mb / 1024
    costs.append(("outbox Lambda (duration + requests)",
                  MILLION * outbox_invocations * (outbox_seconds * outbox_gb * PRICE_LAMBDA_GB_S
                                                  + PRICE_LAMBDA_REQUEST)))
    worker_gb = stage["worker_memory_mb"] / 1024
    costs.append(("worker Lambda (duration + requests)",
                  MILLION * worker_invocations * (worker_seconds * worker_gb * PRICE_LAMBDA_GB_S
                                                  + PRICE_LAMBDA_REQUEST)))
    per_day = rate * 86_400
    reconciler = 1_440 * (args.reconciler_ms / 1000 * infra.reconciler_memory_mb / 1024
                          * PRICE_LAMBDA_GB_S + PRICE_LAMBDA_REQUEST)
    costs.append(("reconciler Lambda (once a minute)", reconciler / per_day * MILLION))
    costs.append(("SQS: the outbox's sends", MILLION * sends * PRICE_SQS_REQUEST))
    costs.append(("SQS: receives, deletes, re-sends (64 KB chunks)",
                  MILLION * (n["billed sqs"] - sends) * PRICE_SQS_REQUEST))
    wru = sum(v for k, v in n.counts.items() if k.startswith("wru "))
    rru = sum(v for k, v in n.counts.items() if k.startswith("rru "))
    costs.append(("DynamoDB writes (tables and indexes)", MILLION * wru * PRICE_WRU))
    costs.append(("DynamoDB reads", MILLION * rru * PRICE_RRU))
    environment = (record_writes * PRICE_WRU + record_reads * per_record_read * PRICE_RRU) / rate
    costs.append(("DynamoDB destination records (per environment and second)",
                  MILLION * environment))
    inline = (1 - args.retry_share) * a.stored_bytes + args.retry_share * m["c"].stored_bytes
    stored = (1 - args.large_share) * inline + args.large_share * m["d"].stored_bytes
    costs.append((f"DynamoDB storage ({args.retention_days:g} days kept)",
                  MILLION * stored / 2**30 * PRICE_DYNAMODB_GB_MONTH * args.retention_days / 30))
    puts = sum(v for k, v in n.counts.items()
               if k.startswith("billed s3 ") and k.split()[-1] in ("PutObject", "CopyObject"))
    gets = sum(v for k, v in n.counts.items() if k.startswith("billed s3 ")) - puts
    costs.append(("S3 requests", MILLION * (puts * PRICE_S3_PUT + gets * PRICE_S3_GET)))
    s3_days = args.body_days
    costs.append((f"S3 storage ({s3_days:g} days kept)",
                  MILLION * args.large_share * args.large_bytes / 2**30 * PRICE_S3_GB_MONTH
                  * s3_days / 30))
    return Model(n, limits, costs, notes, worker_seconds, outbox,
                 {"API": api_concurrency, "outbox": outbox_concurrency,
                  "worker": worker_concurrency, "reconciler": 1})


# -- printing -----------------------------------------------------------------------------------

def number(value: float) -> str:
    if value == math.inf:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("| " + " | ".join(cells) + " |")
        if j == 0:
            lines.append("|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                                         for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


COUNTS = [  # (label, names summed)
    ("API Gateway requests", ["requests apigw"]),
    ("API Lambda invocations", ["invocations api"]),
    ("outbox Lambda invocations (as the harness batched the stream)", ["invocations outbox"]),
    ("worker Lambda invocations (as measured)", ["invocations worker"]),
    ("worker records (deliveries of an SQS entry)", ["records worker"]),
]


def print_measured(m: dict[str, scenarios.Measured], reconciler: list[Call],
                   batch: int) -> None:
    order = ["a", "b", "c", "d"]
    print(f"Per notification, measured (API side, the outbox's calls included + delivery "
          f"side; the worker's event source hands out batches of up to {batch}):\n")
    header = ["", *(f"({k}) {m[k].name}" for k in order)]
    rows = [header, ["notifications", *(str(m[k].notifications) for k in order)]]
    totals = {k: m[k].total for k in order}
    names = sorted({name for t in totals.values() for name, _ in t})
    for label, keys in COUNTS:
        rows.append([label, *(number(sum(totals[k][x] for x in keys)) for k in order)])
    skip = {x for _, keys in COUNTS for x in keys}
    for name in names:
        if name in skip or name.startswith(("key ", "records ")):
            continue
        rows.append([name, *(number(totals[k][name]) for k in order)])
    rows.append(["DynamoDB write units, all", *(number(sum(
        v for x, v in totals[k].counts.items() if x.startswith("wru "))) for k in order)])
    rows.append(["DynamoDB read units, all", *(number(sum(
        v for x, v in totals[k].counts.items() if x.startswith("rru "))) for k in order)])
    rows.append(["item bytes at create", *(f"{m[k].create_size:,}" for k in order)])
    rows.append(["item bytes at the end", *(f"{m[k].final_size:,}" for k in order)])
    rows.append(["item bytes stored, index entries included",
                 *(f"{m[k].stored_bytes:,}" for k in order)])
    rows.append(["seconds (on moto)", *(f"{m[k].seconds:.1f}" for k in order)])
    print(table(rows, set(range(1, len(header)))))
    print("\nPer notification, the API side alone (the outbox's calls included):\n")
    rows = [["", *(f"({k})" for k in order)]]
    for name in sorted({n for k in order for n, _ in m[k].api}):
        if not name.startswith(("key ", "records ")):
            rows.append([name, *(number(m[k].api[name]) for k in order)])
    print(table(rows, set(range(1, len(order) + 1))))
    environment = m["b"].per_environment
    stream = ("DescribeStream", "GetShardIterator", "GetRecords")  # Lambda's reads: free
    print("\nNot per notification (scenario (b), totals): "
          + ", ".join(f"{name} {number(v)}" + (" (the stream, read for the outbox: free)"
                                               if name.endswith(stream) else "")
                      for name, v in environment if name.startswith("calls")))
    runs: dict[str, int] = {}
    for call in reconciler:
        name = f"{call.service} {call.operation}"
        runs[name] = runs.get(name, 0) + 1
    print("One reconciler run (once a minute): "
          + ", ".join(f"{count} {name}" for name, count in runs.items()))
    print("The harness hands the outbox every stream record it has read at a poll (Lambda's "
          "filter would pass only the writes that queue a message), so its invocations and "
          "SendMessageBatch calls above are the harness's; the model computes them from the "
          "records queued (the outbox's SQS entries) and the stream's shards at the rate.")


def print_model(result: Model, args: argparse.Namespace, stage: dict[str, int]) -> int:
    print(f"\nAt {args.rate:,.0f} notifications/s: {args.batch_share:.0%} in batches of 100, "
          f"{args.retry_share:.0%} retried once, {args.large_share:.0%} with a "
          f"{args.large_bytes // 1024} KiB body in S3; partners answer in {args.partner_ms:g} ms; "
          f"API invocation {args.api_ms:g} ms (a batch {args.batch_api_ms:g} ms), outbox "
          f"invocation {args.outbox_ms:g} ms (records: {result.outbox.records:.3g}), worker "
          f"invocation of {args.event_source_batch} records {result.worker_seconds * 1000:,.0f} ms "
          f"(AWS calls {args.aws_concurrency} at a time, {args.aws_call_ms:g} ms each); prod "
          f"stage: {stage['api_memory_mb']} MB API, {args.outbox_memory_mb} MB outbox, "
          f"{stage['worker_memory_mb']} MB worker, "
          f"{args.work_queues or stage['work_queues']} work queue shard(s). "
          "Lambda executions at once: " + ", ".join(
              f"{name} {number(c)}" for name, c in result.concurrency.items()) + ".\n")
    counted = [x for x in result.limits
               if x.kind in ("hard", "design") or not args.with_increases]
    rows = [["limit", "kind", "needed", "available", "holds up to (notifications/s)", "verdict"]]
    for x in result.limits:
        verdict = "holds" if x.holds else (
            "raise it" if args.with_increases and x.kind in ("quota", "setting")
            else "BREAKS")
        rows.append([x.name, x.kind, number(x.needed) + x.unit, number(x.limit) + x.unit,
                     number(x.holds_to), verdict])
    print(table(rows, {2, 3, 4}))
    first = min(result.limits, key=lambda x: x.holds_to)
    first_hard = min((x for x in result.limits if x.kind in ("hard", "design")),
                     key=lambda x: x.holds_to)
    print(f"\nFirst limit to break as the rate grows: {first.name} ({first.kind}), at "
          f"{number(first.holds_to)} notifications/s.")
    print(f"First that no quota or setting lifts: {first_hard.name} ({first_hard.kind}), at "
          f"{number(first_hard.holds_to)} notifications/s.")
    for note in result.notes:
        print(f"Note: {note}")
    print("\nCost per million notifications (prices as of bench/aws_capacity.py):\n")
    rows = [["", "$ per million"]]
    rows += [[name, f"{cost:,.2f}"] for name, cost in result.costs]
    total = sum(cost for _, cost in result.costs)
    rows.append(["**total**", f"**{total:,.2f}**"])
    print(table(rows, {1}))
    rest = total - result.costs[0][1]
    http = rest + MILLION * result.per_notification["requests apigw"] * PRICE_HTTP_API
    print(f"\nWith an HTTP API instead of the REST API: ${http:,.2f} per million. At this "
          f"rate: ${total * args.rate * 86_400 / MILLION:,.0f} a day.")
    broken = [x for x in counted if not x.holds]
    if broken:
        print(f"\nDOES NOT HOLD at {args.rate:,.0f}/s: "
              + "; ".join(f"{x.name} ({x.kind})" for x in broken))
        return 1
    print(f"\nHolds at {args.rate:,.0f}/s"
          + (" (quotas and settings raised)" if args.with_increases else "") + ".")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100_000, help="notifications per second")
    parser.add_argument("--batch-share", type=float, default=0.0,
                        help="share submitted in batches of 100 (the rest one a request)")
    parser.add_argument("--retry-share", type=float, default=0.0,
                        help="share whose first attempt fails (a 503), the second succeeds")
    parser.add_argument("--large-share", type=float, default=0.0,
                        help="share with a body above the inline limit "
                             f"({dynamodb.INLINE_BODY_LIMIT // 1024} KiB), kept in S3")
    parser.add_argument("--sender-share", type=float, default=0.10,
                        help="the largest sender's share of the rate")
    parser.add_argument("--destination-share", type=float, default=0.10,
                        help="the largest destination's share of the rate")
    parser.add_argument("--partner-ms", type=float, default=200,
                        help="a partner's answer time (the slowest of a worker's batch)")
    parser.add_argument("--aws-call-ms", type=float, default=8,
                        help="one DynamoDB or SQS call from a Lambda in the region")
    parser.add_argument("--aws-concurrency", type=int, default=10,
                        help="a worker's AWS calls at a time (botocore: 10 pooled "
                             "connections a client)")
    parser.add_argument("--api-ms", type=float, default=20,
                        help="an API invocation of one submission (one conditional put, "
                             "the app's parsing and checks)")
    parser.add_argument("--batch-api-ms", type=float, default=150,
                        help="an API invocation of a batch of 100 (100 conditional puts "
                             "over botocore's 10 connections: 10 rounds, and 100 items "
                             "parsed and checked)")
    parser.add_argument("--outbox-ms", type=float, default=25,
                        help="an outbox invocation (its records' images decoded, one round "
                             "of SendMessageBatch calls at once: a batch of up to 100 "
                             "needs 10, botocore's 10 connections)")
    parser.add_argument("--stream-shards", type=int, default=0,
                        help="the table stream's shards (default: estimated, one a table "
                             "partition; module docstring)")
    parser.add_argument("--work-queues", type=int, default=0,
                        help="the work queue's shards (default: the prod stage's "
                             "work_queues, infra/notify_relay_infra/config.py)")
    parser.add_argument("--reconciler-ms", type=float, default=1000)
    parser.add_argument("--retention-days", type=float, default=30,
                        help="how long a final message is kept (prod: 30)")
    parser.add_argument("--body-days", type=float, default=162,
                        help="how long S3 keeps a body (prod: 162)")
    parser.add_argument("--body-bytes", type=int, default=500,
                        help="the JSON body of a measured notification")
    parser.add_argument("--large-bytes", type=int, default=4 * dynamodb.INLINE_BODY_LIMIT,
                        help="the body of scenario (d), above the inline limit "
                             "(default: 4 times it)")
    parser.add_argument("--messages", type=int, default=100,
                        help="notifications of scenario (a); (b) 200, (c) half, (d) 10")
    parser.add_argument("--with-increases", action="store_true",
                        help="quotas and the stack's settings taken as raised: only hard "
                             "limits decide the exit status")
    args = parser.parse_args()
    infra = functions()
    args.event_source_batch = infra.worker_batch
    args.outbox_memory_mb = infra.outbox_memory_mb
    stage = prod_stage()
    revision = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip() or "(no git)"
    started = time.monotonic()
    measured, reconciler = measure(args.messages, args.body_bytes, args.large_bytes,
                                   args.event_source_batch)
    print(f"bench/aws_capacity.py at {revision}: measured on moto in "
          f"{time.monotonic() - started:.0f} s; bodies of {args.body_bytes} bytes "
          f"(scenario (d): {args.large_bytes:,})\n")
    print_measured(measured, reconciler, args.event_source_batch)
    return print_model(model(measured, args, stage, infra), args, stage)


if __name__ == "__main__":
    sys.exit(main())
