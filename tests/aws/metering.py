"""What the AWS calls cost, counted where moto answers them.

`Meter.wrap` is a WSGI middleware for moto's server (`start_moto(wrap=meter.wrap)`). It
records every request: service, operation, bytes, the phase the caller was in (set by
whoever drives the handlers, tests/aws/scenarios.py); for SQS the billed requests (one per
64 KB of payload) and the messages a receive returned; for DynamoDB the item before and
after each write, read from moto's backend in this same process while DynamoDB requests are
serialized (tests/aws/moto.py), hence the units DynamoDB would bill.

The units are computed from item sizes, by DynamoDB's published rules, because moto's own
`ReturnConsumedCapacity` answers a constant (1 per write, 0.5 per read):
- an item's size is the sum of its attribute names and values (`item_size`);
- a write costs one unit per KB (rounded up) of the larger of the item before and after it
  (a delete: the item before; a failed condition: the item as it stands, at least 1);
- each global secondary index the write touches costs one unit per KB of its entry (table
  key, index key and projected attributes): a put when the item enters the index, a delete
  when it leaves, both when the index key changes, one update when only a projected
  attribute changes, nothing when no projected attribute changes;
- a read costs one unit per 4 KB of the item (GetItem, each key of a BatchGetItem: the whole
  item, whatever the projection), half for an eventually consistent read; a Query or Scan
  one unit per 4 KB of all it returned (DynamoDB counts what it read before a filter, so
  this is a lower bound; none of the delivery path's calls is filtered).
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from tests.aws.moto import REGION, WsgiApp

SQS_CHUNK = 64 * 1024
DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
DYNAMODB_READS = {"GetItem", "BatchGetItem", "Query", "Scan"}
# what a write of these would cost is not computed: a call of one is marked `unmetered`
DYNAMODB_UNMETERED = {"TransactWriteItems", "TransactGetItems", "ExecuteStatement",
                      "BatchExecuteStatement", "ExecuteTransaction"}


# -- DynamoDB's sizes and units ------------------------------------------------------------

def _number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1 (leading and trailing zeros trimmed)."""
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) if any(digits) else 1
    return (significant + 1) // 2 + 1


def value_size(value: dict[str, Any]) -> int:
    """The size of one typed value (`{"S": ...}`, `{"B": ...}`, ...), its name excluded."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return _number_size(raw)
    if kind == "B":
        return len(raw)  # raw bytes (moto's backend holds them decoded)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode()) for v in raw)
    if kind == "NS":
        return sum(_number_size(v) for v in raw)
    if kind == "BS":
        return sum(len(v) for v in raw)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes, as DynamoDB counts an item for its units and its 400 KB limit."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


STORAGE_OVERHEAD = 100  # bytes DynamoDB bills as stored per item and per index entry


def stored_bytes(item: dict[str, Any], table: Table) -> int:
    """What an item takes in storage, its index entries included."""
    entries = [index.entry(item, table.keys) for index in table.indexes]
    return sum(item_size(e) + STORAGE_OVERHEAD for e in [item, *entries] if e is not None)


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


# -- a table's shape, as moto holds it -------------------------------------------------------

@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]  # partition key first
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    included: frozenset[str]

    def entry(self, item: dict[str, Any] | None, table_keys: tuple[str, ...]
              ) -> dict[str, Any] | None:
        """The item's entry in this index, or None when the item is not in it (sparse)."""
        if item is None or any(k not in item for k in self.keys):
            return None
        if self.projection == "ALL":
            return item
        kept = set(self.keys) | set(table_keys)
        if self.projection == "INCLUDE":
            kept |= self.included
        return {k: v for k, v in item.items() if k in kept}


@dataclass(frozen=True)
class Table:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[Index, ...]

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: item[k] for k in self.keys}


def _table_shape(description: dict[str, Any]) -> Table:
    def keys(schema: list[dict[str, str]]) -> tuple[str, ...]:
        return tuple(k["AttributeName"] for k in sorted(schema, key=lambda k: k["KeyType"]))

    indexes = tuple(
        Index(i["IndexName"], keys(i["KeySchema"]), i["Projection"]["ProjectionType"],
              frozenset(i["Projection"].get("NonKeyAttributes", ())))
        for i in description.get("GlobalSecondaryIndexes", ()))
    return Table(description["TableName"], keys(description["KeySchema"]), indexes)


# -- what was counted -------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexWrite:
    index: str
    partition: str  # the value of the index's partition key written (hot keys)
    units: int


@dataclass
class Call:
    service: str
    operation: str
    phase: str
    request_bytes: int
    response_bytes: int
    ok: bool
    billed: int = 1  # billed requests: SQS bills each 64 KB of payload as one
    payload_bytes: int = 0  # SQS: message bodies and attributes sent or received
    records: int = 0  # SQS: messages sent or received
    table: str = ""
    partition: str = ""  # DynamoDB: the table key's partition value of the (first) item
    write_units: int = 0  # the table's own
    read_units: float = 0.0
    index_writes: tuple[IndexWrite, ...] = ()
    item_size: int | None = None  # the item after a write, or the item a GetItem read
    unmetered: bool = False

    @property
    def index_units(self) -> int:
        return sum(w.units for w in self.index_writes)


def index_writes(table: Table, before: dict[str, Any] | None,
                 after: dict[str, Any] | None) -> list[IndexWrite]:
    """The index writes one table write makes, by each index's rules (module docstring)."""
    writes: list[IndexWrite] = []
    for index in table.indexes:
        old, new = index.entry(before, table.keys), index.entry(after, table.keys)
        if old is None and new is None:
            continue
        old_key = None if old is None else [old[k] for k in index.keys]
        new_key = None if new is None else [new[k] for k in index.keys]
        if old is not None and old_key != new_key:
            writes.append(IndexWrite(index.name, _text(old[index.keys[0]]),
                                     write_units(item_size(old))))
        if new is not None and old_key != new_key:
            writes.append(IndexWrite(index.name, _text(new[index.keys[0]]),
                                     write_units(item_size(new))))
        elif new is not None and old is not None and new != old:
            writes.append(IndexWrite(index.name, _text(new[index.keys[0]]),
                                     write_units(max(item_size(old), item_size(new)))))
    return writes


def _text(value: dict[str, Any]) -> str:
    ((_, raw),) = value.items()
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


# -- the middleware ---------------------------------------------------------------------------

class Meter:
    """Counts every request moto's server answers (module docstring). `phase` names who
    is calling now; the driver sets it (the handlers run one at a time)."""

    def __init__(self, region: str = REGION) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID

        self.calls: list[Call] = []
        self.phase = ""
        self._region = region
        self._account = DEFAULT_ACCOUNT_ID
        self._lock = threading.Lock()
        self._tables: dict[str, Table] = {}

    def wrap(self, app: WsgiApp) -> WsgiApp:
        def metered(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            return self._handle(app, environ, start_response)
        return metered

    def mark(self) -> int:
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[Call]:
        with self._lock:
            return self.calls[mark:]

    # -- DynamoDB, through moto's backend (same process, requests serialized) --------------

    def _backend(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[self._account][self._region]

    def table(self, name: str) -> Table:
        """The table's key schema and indexes, as moto holds them."""
        if name not in self._tables:
            described = self._backend().describe_table(name)
            self._tables[name] = _table_shape(described.get("Table", described))
        return self._tables[name]

    def _item(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        found = self._backend().get_item(table, key)
        if found is None:
            return None
        item: dict[str, Any] = found.to_json()["Attributes"]
        return item

    def _targets(self, operation: str, request: dict[str, Any]
                 ) -> list[tuple[str, dict[str, Any]]]:
        """(table, key) of each item a write or a keyed read names."""
        if operation in ("PutItem", "UpdateItem", "DeleteItem", "GetItem"):
            table = self.table(request["TableName"])
            key = table.key_of(request["Item"]) if operation == "PutItem" else request["Key"]
            return [(table.name, key)]
        found: list[tuple[str, dict[str, Any]]] = []
        for name, entries in request.get("RequestItems", {}).items():
            table = self.table(name)
            if operation == "BatchGetItem":
                found += [(name, key) for key in entries["Keys"]]
                continue
            for entry in entries:
                if "PutRequest" in entry:
                    found.append((name, table.key_of(entry["PutRequest"]["Item"])))
                else:
                    found.append((name, entry["DeleteRequest"]["Key"]))
        return found

    def _dynamodb(self, call: Call, operation: str, request: dict[str, Any],
                  response: dict[str, Any], run: Callable[[], None]) -> None:
        if operation in DYNAMODB_UNMETERED:
            call.unmetered = True
            run()
            return
        if operation not in DYNAMODB_WRITES | DYNAMODB_READS:
            run()
            return
        call.table = request.get("TableName", next(iter(request.get("RequestItems", {})), ""))
        if operation in ("Query", "Scan"):
            run()
            sizes = [item_size(i) for i in response.get("Items", [])]
            call.read_units = read_units(sum(sizes), bool(request.get("ConsistentRead")))
            return
        targets = self._targets(operation, request)
        if targets:
            call.partition = _text(next(iter(targets[0][1].values())))
        befores = [self._item(t, k) for t, k in targets]
        run()
        if operation in DYNAMODB_READS:  # GetItem, BatchGetItem: the whole item counts
            consistent = bool(request.get("ConsistentRead"))
            for before in befores:
                size = item_size(before) if before is not None else 0
                call.read_units += read_units(size, consistent)
                call.item_size = size if before is not None else None
            return
        if not call.ok:  # a failed condition still costs the item's units, no index's
            if response.get("__type", "").endswith("ConditionalCheckFailedException"):
                call.write_units = sum(write_units(item_size(b) if b else 0) for b in befores)
            return
        for (table, key), before in zip(targets, befores, strict=True):
            after = self._item(table, key)
            sizes = [item_size(i) for i in (before, after) if i is not None]
            call.write_units += write_units(max(sizes, default=0))
            call.index_writes += tuple(index_writes(self.table(table), before, after))
            if after is not None:
                call.item_size = item_size(after)

    # -- SQS and S3 ------------------------------------------------------------------------

    @staticmethod
    def _sqs(call: Call, operation: str, request: dict[str, Any],
             response: dict[str, Any]) -> None:
        def payload(body: str, attributes: dict[str, Any]) -> int:
            return len(body.encode()) + sum(
                len(name.encode()) + len(a.get("DataType", "").encode())
                + len(str(a.get("StringValue", a.get("BinaryValue", ""))).encode())
                for name, a in attributes.items())

        if operation == "SendMessage":
            sent = [request]
        elif operation == "SendMessageBatch":
            sent = request.get("Entries", [])
        else:
            sent = []
        received = response.get("Messages", []) if operation == "ReceiveMessage" else []
        call.records = len(sent) + len(received)
        call.payload_bytes = (
            sum(payload(m.get("MessageBody", ""), m.get("MessageAttributes", {})) for m in sent)
            + sum(payload(m.get("Body", ""), m.get("MessageAttributes", {})) for m in received))
        call.billed = max(1, math.ceil(call.payload_bytes / SQS_CHUNK))
        if operation == "ReceiveMessage" and not received:
            call.operation = "ReceiveMessage (empty)"

    @staticmethod
    def _s3_operation(environ: dict[str, Any]) -> str:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "").strip("/")
        on_object = "/" in path
        if method == "PUT":
            if not on_object:
                return "CreateBucket"
            return "CopyObject" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else "PutObject"
        if method in ("GET", "HEAD"):
            if on_object:
                return "GetObject" if method == "GET" else "HeadObject"
            return "ListObjects" if method == "GET" else "HeadBucket"
        if method == "DELETE":
            return "DeleteObject" if on_object else "DeleteBucket"
        return f"{method} {'object' if on_object else 'bucket'}"

    # -- one request -----------------------------------------------------------------------

    def _handle(self, app: WsgiApp, environ: dict[str, Any],
                start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        scope = environ.get("HTTP_AUTHORIZATION", "").split("Credential=")[-1].split("/")
        service = scope[3] if len(scope) > 4 else "unknown"
        operation = target.split(".")[-1] if target else self._s3_operation(environ)
        call = Call(service, operation, self.phase, len(body), 0, ok=False)
        statuses: list[str] = []

        def capture(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            statuses.append(status)
            return start_response(status, headers, *exc)

        chunks: list[bytes] = []

        def run() -> None:
            result = app(environ, capture)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            call.ok = bool(statuses) and statuses[0].startswith("2")
            call.response_bytes = sum(len(c) for c in chunks)
            response.update(_json(b"".join(chunks)))

        request = _json(body) if target else {}
        response: dict[str, Any] = {}
        if service == "dynamodb":
            self._dynamodb(call, operation, request, response, run)
        else:
            run()
            if service == "sqs":
                self._sqs(call, operation, request, response)
        with self._lock:
            self.calls.append(call)
        return chunks


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


# -- adding up --------------------------------------------------------------------------------

@dataclass
class Tally:
    """Counts by name, added and scaled as numbers: `calls dynamodb PutItem messages`,
    `wru messages/bySender`, `key wru messages/bySender orders#3` (the units written on
    one partition key of an index: its hot keys), `billed sqs`, ... (see `tally`)."""

    counts: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.counts[name] = self.counts.get(name, 0.0) + value

    def __getitem__(self, name: str) -> float:
        return self.counts.get(name, 0.0)

    def __add__(self, other: Tally) -> Tally:
        total = Tally(dict(self.counts))
        for name, value in other.counts.items():
            total.add(name, value)
        return total

    def __mul__(self, factor: float) -> Tally:
        return Tally({name: value * factor for name, value in self.counts.items()})

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(sorted(self.counts.items()))

    def matching(self, prefix: str) -> dict[str, float]:
        return {name: value for name, value in self if name.startswith(prefix)}


def tally(calls: Iterable[Call], role: Callable[[Call], str]) -> Tally:
    """Counts of `calls`; `role` names what a DynamoDB call's item is (`messages`,
    `slots`, ...), so that units are told apart by it."""
    total = Tally()
    for call in calls:
        if call.service == "sqs":
            total.add("billed sqs", call.billed)
            total.add("bytes sqs payload", call.payload_bytes)
            total.add(f"records sqs {call.operation}", call.records)
        if call.service == "s3":
            total.add(f"billed s3 {call.operation}", 1)
            total.add("bytes s3", call.request_bytes + call.response_bytes)
        if call.service != "dynamodb" or not call.table:
            total.add(f"calls {call.service} {call.operation}", 1)
            continue
        name = role(call)
        total.add(f"calls dynamodb {call.operation} {name}", 1)
        total.add(f"wru {name}", call.write_units)
        total.add(f"rru {name}", call.read_units)
        for write in call.index_writes:
            index = f"{name}/{write.index}"
            total.add(f"wru {index}", write.units)
            total.add(f"index writes {index}", 1)
            total.add(f"key wru {index} {write.partition}", write.units)
    return total
