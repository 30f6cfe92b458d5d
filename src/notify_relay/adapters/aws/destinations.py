"""DestinationStore and SlotLimiter on DynamoDB, in a table of their own ("destinations").

Items (senderIds and names never contain '#': see domain/submission.py, domain/destination.py):
- a destination record: `pk` = senderId, `sk` = name, so that a Query of the sender's
  partition lists its destinations by name; `doc` (the codec's document, JSON bytes),
  `state` (the breaker's, for the list filter) and `version`. A message's first sight of a
  destination puts a bare record (`version` 0, no `doc`: all defaults) that any save may
  then take over (DynamoStore.create).
- a slot: `pk` = `slot#<senderId>#<name>#<i>`, `sk` = "-", for i below the limit, holding a
  `token` and `leaseUntil` (epoch seconds). Each slot is a partition of its own, so a busy
  destination spreads its slot writes over `limit` partitions instead of one hot item.

`pending` counts the destination's unfinished messages in the messages table's sparse
index `destPending` (see DynamoStore), over its shards.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from notify_relay.adapters.codec import destination_from_doc, destination_to_doc
from notify_relay.adapters.paging import decode_cursor, encode_cursor
from notify_relay.domain.destination import BreakerState, Destination, DestinationKey
from notify_relay.domain.errors import InvalidCursor, StaleWrite
from notify_relay.ports import DestinationPage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# A destination's unfinished messages are spread over this many `destPending` keys (a
# key takes about 1,000 index writes/s, two a message: 32 carry ~16,000 messages/s to one
# destination). It may grow, never shrink: an item keeps its key until its next write
# moves it to hash % N, and a count reads shards 0..N-1, so items written when there were
# 8 (shards 0..7) are still counted, each once.
PENDING_SHARDS = 32
PENDING_INDEX = "destPending"
SLOT_TRIES = 3
BATCH_GET_LIMIT = 100


def is_conditional_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def record_key(key: DestinationKey) -> dict[str, Any]:
    return {"pk": {"S": key.sender_id}, "sk": {"S": key.name}}


def bare_record(key: DestinationKey) -> dict[str, Any]:
    """What a message puts on record: listed, all defaults, version 0."""
    return {**record_key(key), "version": {"N": "0"},
            "state": {"S": BreakerState.CLOSED.value}}


def pending_key(key: DestinationKey, shard: int) -> str:
    return f"{key.sender_id}#{key.name}#{shard}"


def _destination(item: dict[str, Any]) -> Destination:
    doc = orjson.loads(item["doc"]["B"]) if "doc" in item else None
    version = int(item.get("version", {}).get("N", "0"))
    return destination_from_doc(doc, DestinationKey(item["pk"]["S"], item["sk"]["S"]), version)


class DynamoDestinationStore:
    def __init__(self, dynamodb: DynamoDBClient, table: str, messages_table: str) -> None:
        self._db = dynamodb
        self._table = table
        self._messages = messages_table

    async def get(self, key: DestinationKey) -> Destination | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: DestinationKey) -> Destination | None:
        # consistent: after a StaleWrite the Gate re-reads to re-apply its change
        item = self._db.get_item(TableName=self._table, Key=record_key(key),
                                 ConsistentRead=True).get("Item")
        return _destination(item) if item else None

    async def save(self, destination: Destination) -> Destination:
        return await asyncio.to_thread(self._save, destination)

    def _save(self, destination: Destination) -> Destination:
        expected = destination.version
        # version 0: none stored yet, or only the bare record a message put
        condition = "attribute_not_exists(pk) OR #version = :v" if expected == 0 \
            else "#version = :v"
        item = {
            **record_key(destination.key),
            "doc": {"B": orjson.dumps(destination_to_doc(destination))},
            "state": {"S": destination.breaker.state.value},
            "version": {"N": str(expected + 1)},
        }
        try:
            self._db.put_item(TableName=self._table, Item=item, ConditionExpression=condition,
                              ExpressionAttributeNames={"#version": "version"},
                              ExpressionAttributeValues={":v": {"N": str(expected)}})
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise StaleWrite() from None
            raise
        return destination.with_version(expected + 1)

    async def list(
        self, sender_id: str, state: BreakerState | None, limit: int, cursor: str | None
    ) -> DestinationPage:
        return await asyncio.to_thread(self._list, sender_id, state, limit, cursor)

    def _list(self, sender_id: str, state: BreakerState | None, limit: int,
              cursor: str | None) -> DestinationPage:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": sender_id}},
        }
        if state is not None:
            query["FilterExpression"] = "#state = :state"
            query["ExpressionAttributeNames"] = {"#state": "state"}
            query["ExpressionAttributeValues"][":state"] = {"S": state.value}
        start = _start_key(sender_id, cursor) if cursor else None
        found: list[Destination] = []
        # one more than asked, to know whether a next page exists (a filter may need pages)
        while len(found) <= limit:
            if start is not None:
                query["ExclusiveStartKey"] = start
            response = self._db.query(**query, Limit=limit + 1 - len(found))
            found += [_destination(item) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        items = found[:limit]
        more = len(found) > limit
        return DestinationPage(
            items, encode_cursor(record_key(items[-1].key)) if more else None)

    async def pending(self, key: DestinationKey) -> int:
        """A COUNT query per shard, all at once (a Lambda's pool has 64 threads and as many
        connections: lambdas.AWS_CALLS_IN_FLIGHT), so a view waits one query, not 32."""
        counts = await asyncio.gather(*(asyncio.to_thread(self._pending_in, key, shard)
                                        for shard in range(PENDING_SHARDS)))
        return sum(counts)

    def _pending_in(self, key: DestinationKey, shard: int) -> int:
        query: dict[str, Any] = {
            "TableName": self._messages,
            "IndexName": PENDING_INDEX,
            "KeyConditionExpression": "destPending = :d",
            "ExpressionAttributeValues": {":d": {"S": pending_key(key, shard)}},
            "Select": "COUNT",
        }
        count = 0
        while True:
            response = self._db.query(**query)
            count += response.get("Count", 0)
            last = response.get("LastEvaluatedKey")
            if last is None:
                return count
            query["ExclusiveStartKey"] = last

    async def active(self) -> Sequence[Destination]:
        """A Scan of the whole table: for an embedded gate's start, never the Lambdas'."""
        return await asyncio.to_thread(self._active)

    def _active(self) -> Sequence[Destination]:
        scan: dict[str, Any] = {"TableName": self._table,
                                "FilterExpression": "attribute_exists(doc)"}
        found: list[Destination] = []
        while True:
            response = self._db.scan(**scan)
            found += [_destination(item) for item in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            if last is None:
                return found
            scan["ExclusiveStartKey"] = last


def _start_key(sender_id: str, cursor: str) -> dict[str, Any]:
    """The cursor's position, which must be in this sender's partition."""
    position = decode_cursor(cursor)
    if isinstance(position, dict):
        pk, sk = position.get("pk"), position.get("sk")
        if (isinstance(pk, dict) and pk.get("S") == sender_id and isinstance(sk, dict)
                and isinstance(sk.get("S"), str) and sk["S"]):  # DynamoDB refuses "" in a key
            return record_key(DestinationKey(sender_id, sk["S"]))
    raise InvalidCursor()


# -- attempts in flight across Lambdas --------------------------------------------------------


def slot_key(key: DestinationKey, index: int) -> dict[str, Any]:
    return {"pk": {"S": f"slot#{key.sender_id}#{key.name}#{index}"}, "sk": {"S": "-"}}


class DynamoSlotLimiter:
    """At most `limit` leases at once per destination: one conditional write per slot.

    `acquire` tries up to SLOT_TRIES random slots below the limit and takes the first that
    is free or whose lease has ended; the token names the slot. It never tries a slot this
    process holds or is trying already, so the attempts of one Lambda environment do not
    collide among themselves. The bound is strict (a slot has one holder, DynamoDB applies
    the condition atomically), at the price of some under-use near the cap: with most slots
    taken by other processes, a few random tries may all miss the free one, and the attempt
    is held a moment. A holder that dies keeps its slot until its lease ends.
    """

    def __init__(self, dynamodb: DynamoDBClient, table: str, *, tries: int = SLOT_TRIES,
                 clock: Callable[[], float] = time.time,
                 rand: random.Random | None = None) -> None:
        self._db = dynamodb
        self._table = table
        self._tries = tries
        self._clock = clock
        self._rand = rand or random.Random()  # noqa: S311 -- spreading load, not secrecy
        self._lock = threading.Lock()  # the calls run in worker threads
        # this process's slots: held (index -> secret) and being tried
        self._held: dict[DestinationKey, dict[int, str]] = {}
        self._trying: dict[DestinationKey, set[int]] = {}

    def _pick(self, key: DestinationKey, limit: int, tried: set[int]) -> int | None:
        """A slot to try that this process neither holds nor tries; marked as tried."""
        with self._lock:
            trying = self._trying.setdefault(key, set())
            busy = self._held.get(key, {}).keys() | trying | tried
            free = [i for i in range(limit) if i not in busy]
            if not free:
                return None
            index = self._rand.choice(free)
            trying.add(index)
            tried.add(index)
            return index

    def _tried(self, key: DestinationKey, index: int, secret: str | None) -> None:
        """The try is over; `secret`: it took the slot."""
        with self._lock:
            trying = self._trying.get(key, set())
            trying.discard(index)
            if not trying:
                self._trying.pop(key, None)
            if secret is not None:
                self._held.setdefault(key, {})[index] = secret

    def _unhold(self, key: DestinationKey, index: int, secret: str) -> None:
        with self._lock:
            mine = self._held.get(key, {})
            if mine.get(index) == secret:
                del mine[index]
                if not mine:
                    del self._held[key]

    async def acquire(self, key: DestinationKey, limit: int, lease_seconds: float) -> str | None:
        return await asyncio.to_thread(self._acquire, key, limit, lease_seconds)

    def _acquire(self, key: DestinationKey, limit: int, lease_seconds: float) -> str | None:
        secret = secrets.token_hex(16)
        tried: set[int] = set()
        for _ in range(self._tries):
            index = self._pick(key, limit, tried)
            if index is None:
                return None
            taken = False
            try:
                taken = self._take(key, index, secret, lease_seconds)
            finally:
                self._tried(key, index, secret if taken else None)
            if taken:
                return f"{index}.{secret}"
        return None

    def _take(self, key: DestinationKey, index: int, secret: str, lease_seconds: float) -> bool:
        now = self._clock()
        try:
            self._db.put_item(
                TableName=self._table,
                Item={**slot_key(key, index), "token": {"S": secret},
                      "leaseUntil": {"N": f"{now + lease_seconds:.3f}"}},
                ConditionExpression="attribute_not_exists(pk) OR leaseUntil < :now",
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}})
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    async def release(self, key: DestinationKey, token: str) -> None:
        await asyncio.to_thread(self._release, key, token)

    def _release(self, key: DestinationKey, token: str) -> None:
        index, _, secret = token.partition(".")
        if not index.isdigit() or not secret:
            return  # not a token of ours: nothing of ours to free
        try:
            self._delete(key, int(index), secret)
        finally:
            self._unhold(key, int(index), secret)

    def _delete(self, key: DestinationKey, index: int, secret: str) -> None:
        try:
            self._db.delete_item(
                TableName=self._table, Key=slot_key(key, index),
                ConditionExpression="#token = :t",
                ExpressionAttributeNames={"#token": "token"},
                ExpressionAttributeValues={":t": {"S": secret}})
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            # the lease ended and another holder took the slot: it is theirs now

    async def in_use(self, key: DestinationKey, limit: int) -> int:
        return await asyncio.to_thread(self._in_use, key, limit)

    def _in_use(self, key: DestinationKey, limit: int) -> int:
        now = self._clock()
        keys = [slot_key(key, i) for i in range(limit)]
        count = 0
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request: dict[str, Any] = {self._table: {
                "Keys": keys[start:start + BATCH_GET_LIMIT],
                "ProjectionExpression": "leaseUntil"}}
            while request:
                response = self._db.batch_get_item(RequestItems=request)
                count += sum(1 for item in response.get("Responses", {}).get(self._table, [])
                             if float(item["leaseUntil"]["N"]) >= now)
                request = dict(response.get("UnprocessedKeys") or {})
                if request:
                    time.sleep(0.05)  # throttled: DynamoDB asks to back off
        return count
