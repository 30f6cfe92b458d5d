"""MessageStore on DynamoDB, with bodies above INLINE_BODY_LIMIT kept in S3 (claim check).

Item layout (one item per message, key `pk = <senderId>#<messageId>`):
- idempotency: `put_item` with `attribute_not_exists(pk)`; the fingerprint is compared after.
- concurrency: every update is conditional on `version`, so of two workers racing to record
  an outcome, exactly one wins; the other gets StaleWrite.
- listing: GSIs `bySender` (listShard = sender#n, sortKey) and `bySenderStatus`
  (statusShard = sender#status#n, sortKey), sortKey = createdAt#messageId, KEYS_ONLY (the
  second with updatedAt too, for replay's failure window).
  A sender's messages are spread over SENDER_SHARDS keys by a hash of the message id, so
  that one sender at 10,000/s is no hot partition (each takes 1,000 writes/s, and a sort
  key that only grows cannot be split for heat); KEYS_ONLY, so that an update that keeps
  the status writes no index and one that changes it writes two small index entries, not
  the whole item twice. A page queries every shard for the next `limit` keys after the
  cursor (the last sortKey returned: unique within a sender), merges them newest first
  and reads the page's items in batches. The relay's own outcome notices carry neither
  attribute, so they are never listed.
- queueing: the outbox. A message is stored marked queued (create_queued), and the table's
  stream, read by the outbox Lambda (adapters/aws/outbox.py), sends it to SQS once the
  write has committed; a retry by hand is one write that makes it QUEUED and queued again.
  No write is followed by a separate send, so nothing is stored but never queued.
- destinations: a sparse GSI `destPending` (KEYS_ONLY) holds only messages that are not
  final, keyed `<senderId>#<destination>#<shard>` (PENDING_SHARDS shards, so that one busy
  destination is no hot partition): DynamoDestinationStore.pending counts it. Both sparse
  attributes are set or removed by every write, as the status says.
- a message puts its destination on record in the destinations table (a bare record, once
  per destination and process: see _note_destination).
- retention: `expiresAt` (epoch seconds), the table's TTL attribute, is set on final
  messages only (their last change + retention) and removed when one is retried by hand.
- size: attempts beyond ATTEMPTS_KEPT are dropped from the item (attemptCount keeps
  counting) so that an item stays far below DynamoDB's 400 KB limit; a body above
  INLINE_BODY_LIMIT goes to S3, since every write of an item costs a unit per KB of it:
  a 10 KiB body inline costs about 40 write units a notification, in S3 one PUT.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from notify_relay.adapters.aws.destinations import (
    PENDING_SHARDS,
    bare_record,
    is_conditional_failure,
    pending_key,
)
from notify_relay.adapters.codec import message_from_doc, message_to_doc
from notify_relay.adapters.paging import decode_cursor, encode_cursor
from notify_relay.domain.callback import is_notice
from notify_relay.domain.destination import DestinationKey
from notify_relay.domain.errors import InvalidCursor, StaleWrite, StoreUnavailable
from notify_relay.domain.message import Message, MessageKey
from notify_relay.domain.status import Status
from notify_relay.ports import Page

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("notify_relay.dynamodb")
INLINE_BODY_LIMIT = 4 * 1024
ATTEMPTS_KEPT = 50
# fixed for the table's life: items keep the shard they were written with, and a list
# reads shards 0..SENDER_SHARDS-1 only
SENDER_SHARDS = 32
BATCH_GET_KEYS = 100  # DynamoDB's BatchGetItem limit
BATCH_GET_TRIES = 8  # for what it leaves unprocessed, with backoff (about 5 s in all)
DEFAULT_RETENTION = timedelta(days=30)
DESTINATIONS_REMEMBERED = 10_000


def _pk(key: MessageKey) -> str:
    return f"{key.sender_id}#{key.message_id}"


def _sort_key(message: Message) -> str:
    return f"{message.created_at.isoformat()}#{message.key.message_id}"


def _sparse(message: Message) -> dict[str, dict[str, str] | None]:
    """The sparse index attributes the message's state calls for (None: removed)."""
    digest = hashlib.sha256(_pk(message.key).encode()).digest()
    listed = not is_notice(message.key)
    sender, shard = message.key.sender_id, digest[2] % SENDER_SHARDS
    return {
        "destPending": None if message.status.is_final else {
            "S": pending_key(message.destination_key, digest[1] % PENDING_SHARDS)},
        "listShard": {"S": f"{sender}#{shard}"} if listed else None,
        "statusShard": {"S": f"{sender}#{message.status.value}#{shard}"} if listed else None,
    }


def _after(cursor: str, sender_id: str, status: Status | None) -> str:
    """The sortKey a cursor resumes after. A cursor names its sender and filter: one of
    another sender or filter is InvalidCursor (a 400), never another list's page."""
    position = decode_cursor(cursor)
    expected = {"sender": sender_id, "status": status.value if status else None}
    if (not isinstance(position, dict) or set(position) != {"sender", "status", "after"}
            or {k: position[k] for k in expected} != expected
            or not isinstance(position["after"], str) or not position["after"]):
        raise InvalidCursor()
    after: str = position["after"]
    return after


def message_of_item(item: dict[str, Any], body: bytes | None = None) -> Message:
    """The message an item (or a stream image, its binary values decoded) holds."""
    return message_from_doc(
        orjson.loads(item["doc"]["B"]),
        key=MessageKey(item["sender"]["S"], item["messageId"]["S"]),
        status=item["status"]["S"],
        fingerprint=item["fingerprint"]["S"],
        created_at=item["createdAt"]["S"],
        updated_at=item["updatedAt"]["S"],
        queued=item["queued"]["BOOL"],
        version=int(item["version"]["N"]),
        body=body,
    )


class DynamoStore:
    queued_by_outbox = True  # ports.OutboxStore: the table's stream queues

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        s3: S3Client,
        bucket: str,
        retention: timedelta = DEFAULT_RETENTION,
        *,
        destinations_table: str | None = None,
    ) -> None:
        """`destinations_table`: where messages put their destinations on record (None only
        for tests of the message store alone)."""
        self._db = dynamodb
        self._table = table
        self._s3 = s3
        self._bucket = bucket
        self._retention = retention
        self._destinations = destinations_table
        self._noted: set[DestinationKey] = set()

    # -- item <-> message ---------------------------------------------------------------

    def _mutable(self, message: Message) -> dict[str, Any]:
        """Attributes an update rewrites (everything but key, body and creation)."""
        kept = message.attempts[-ATTEMPTS_KEPT:]
        doc = message_to_doc(replace(message, attempts=kept))
        return {
            "status": {"S": message.status.value},
            "updatedAt": {"S": message.updated_at.isoformat()},
            "queued": {"BOOL": message.queued},
            "doc": {"B": orjson.dumps(doc)},
        }

    def _optional(self, message: Message) -> dict[str, dict[str, str] | None]:
        """The sparse attributes, and the TTL: only a final message expires (counted from
        its final change), as in SQLite; a waiting one (held by a paused destination, a
        long retry span) must never vanish under the TTL however long it waits."""
        expires_at = (str(int((message.updated_at + self._retention).timestamp()))
                      if message.status.is_final else None)
        return _sparse(message) | {"expiresAt": None if expires_at is None
                                   else {"N": expires_at}}

    def _item(self, message: Message, body_ref: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": {"S": _pk(message.key)},
            "sender": {"S": message.key.sender_id},
            "messageId": {"S": message.key.message_id},
            "fingerprint": {"S": message.fingerprint},
            "createdAt": {"S": message.created_at.isoformat()},
            "sortKey": {"S": _sort_key(message)},
            "version": {"N": "1"},
            **self._mutable(message),
        }
        item |= {name: value for name, value in self._optional(message).items()
                 if value is not None}
        if body_ref is not None:
            item["bodyRef"] = {"S": body_ref}
        elif message.content.body is not None:
            item["body"] = {"B": message.content.body}
        return item

    def _message(self, item: dict[str, Any], body: bytes | None) -> Message:
        return message_of_item(item, body)

    def _body_of(self, item: dict[str, Any]) -> bytes | None:
        if "bodyRef" in item:
            response = self._s3.get_object(Bucket=self._bucket, Key=item["bodyRef"]["S"])
            body: bytes = response["Body"].read()
            return body
        if "body" in item:
            inline: bytes = item["body"]["B"]
            return inline
        return None

    # -- the port --------------------------------------------------------------------------

    async def create(self, message: Message) -> tuple[Message, bool]:
        return await asyncio.to_thread(self._create, message)

    async def create_queued(self, message: Message) -> tuple[Message, bool]:
        return await asyncio.to_thread(self._create, message.mark_queued())

    def _note_destination(self, key: DestinationKey) -> None:
        """Put the destination on record, so that it is listed: a bare record, written only
        if none exists; once per destination and process (a bounded memory of those done),
        so it costs one write per destination per Lambda environment, not per message."""
        if self._destinations is None or key in self._noted:
            return
        try:
            self._db.put_item(TableName=self._destinations, Item=bare_record(key),
                              ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
        if len(self._noted) >= DESTINATIONS_REMEMBERED:
            self._noted.clear()
        self._noted.add(key)

    def _create(self, message: Message) -> tuple[Message, bool]:
        # first: a message on record always has its destination on record
        self._note_destination(message.destination_key)
        body_ref = None
        body = message.content.body
        if body is not None and len(body) > INLINE_BODY_LIMIT:
            # content-addressed: a retried submission rewrites the same object
            body_ref = f"bodies/{_pk(message.key)}/{hashlib.sha256(body).hexdigest()}"
            self._s3.put_object(Bucket=self._bucket, Key=body_ref, Body=body)
        try:
            self._db.put_item(TableName=self._table, Item=self._item(message, body_ref),
                              ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            existing = self._get(message.key)
            if existing is None:  # deleted in between (TTL): let the caller retry
                raise StaleWrite() from None
            return existing, False
        return message.with_version(1), True

    async def get(self, key: MessageKey, *, with_body: bool = True) -> Message | None:
        return await asyncio.to_thread(self._get, key, with_body)

    def _get(self, key: MessageKey, with_body: bool = True) -> Message | None:
        response = self._db.get_item(TableName=self._table, Key={"pk": {"S": _pk(key)}},
                                     ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None
        return self._message(item, self._body_of(item) if with_body else None)

    async def update(self, message: Message) -> Message:
        return await asyncio.to_thread(self._update, message)

    def _update(self, message: Message) -> Message:
        values = self._mutable(message)
        names = {f"#{k}": k for k in values}
        sets = [f"#{k} = :{k}" for k in values] + ["#version = :next"]
        names["#version"] = "version"
        expression_values = {f":{k}": v for k, v in values.items()}
        expression_values[":expected"] = {"N": str(message.version)}
        expression_values[":next"] = {"N": str(message.version + 1)}
        removes: list[str] = []
        for name, value in self._optional(message).items():
            if value is None:
                removes.append(name)
            else:
                sets.append(f"{name} = :{name}")
                expression_values[f":{name}"] = value
        update = "SET " + ", ".join(sets)
        if removes:
            update += " REMOVE " + ", ".join(removes)
        # the write of a retry by hand (the only write that leaves a message QUEUED after
        # a round of attempts; at worst a later one copies the body once more)
        retried_by_hand = message.status is Status.QUEUED and message.round_start > 0
        try:
            response = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": _pk(message.key)}},
                UpdateExpression=update,
                ConditionExpression="attribute_exists(pk) AND #version = :expected",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=expression_values,
                ReturnValues="ALL_NEW" if retried_by_hand else "NONE",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise StaleWrite() from None
            raise
        if retried_by_hand and "bodyRef" in response.get("Attributes", {}):
            self._renew_body(response["Attributes"]["bodyRef"]["S"])
        return message.with_version(message.version + 1)

    def _renew_body(self, ref: str) -> None:
        """A retry by hand starts a new retry span: copy the body onto itself, so that the
        bucket's lifecycle (sized for one span plus retention) counts from now.

        Best effort: the retry is committed by then, and failing it here would answer 5xx
        for a retry that happened (and 409 to the sender's next try). The body then keeps
        its old lifetime: logged, as a long retry span may outlive it."""
        try:
            self._s3.copy_object(Bucket=self._bucket, Key=ref, MetadataDirective="REPLACE",
                                 CopySource={"Bucket": self._bucket, "Key": ref})
        except (ClientError, BotoCoreError) as exc:
            log.warning("renewing a retried message's body failed",
                        extra={"bodyRef": ref, "error": f"{type(exc).__name__}: {exc}"[:300]})

    async def list(
        self, sender_id: str, status: Status | None, limit: int, cursor: str | None
    ) -> Page:
        return await asyncio.to_thread(self._list, sender_id, status, limit, cursor)

    def _list(self, sender_id: str, status: Status | None, limit: int,
              cursor: str | None) -> Page:
        if status is None:
            index, key, prefix = "bySender", "listShard", sender_id
        else:
            index, key, prefix = "bySenderStatus", "statusShard", f"{sender_id}#{status.value}"
        after = _after(cursor, sender_id, status) if cursor else None

        def shard_keys(shard: int) -> tuple[list[str], bool]:
            query: dict[str, Any] = {
                "TableName": self._table, "IndexName": index, "ScanIndexForward": False,
                "Limit": limit, "KeyConditionExpression": "#k = :k",
                "ExpressionAttributeNames": {"#k": key},
                "ExpressionAttributeValues": {":k": {"S": f"{prefix}#{shard}"}}}
            if after is not None:
                query["KeyConditionExpression"] += " AND sortKey < :after"
                query["ExpressionAttributeValues"][":after"] = {"S": after}
            response = self._db.query(**query)
            return ([f"{item['sortKey']['S']}\n{item['pk']['S']}"
                     for item in response.get("Items", [])],
                    "LastEvaluatedKey" in response)

        with ThreadPoolExecutor(max_workers=8) as pool:
            shards = list(pool.map(shard_keys, range(SENDER_SHARDS)))
        merged = sorted((entry for keys, _ in shards for entry in keys), reverse=True)
        page = [entry.split("\n", 1) for entry in merged[:limit]]
        more = len(merged) > limit or any(truncated for _, truncated in shards)
        items = self._items([pk for _, pk in page])
        # list items carry no body: a listing never needs it, and it may live in S3; an
        # item whose status changed since the index was read is left out of a filtered
        # page (the page may come short; the cursor, a sort key that never changes, holds)
        messages = [self._message(items[pk], None) for _, pk in page if pk in items
                    and (status is None or items[pk]["status"]["S"] == status.value)]
        next_cursor = (encode_cursor({"sender": sender_id,
                                      "status": status.value if status else None,
                                      "after": page[-1][0]})
                       if more and page else None)
        return Page(messages, next_cursor)

    def _items(self, pks: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items of these keys (the ones that exist), strongly consistent: a list
        shows each message as it is now, not as the index last saw it."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), BATCH_GET_KEYS):
            wanted: dict[str, Any] = {self._table: {
                "Keys": [{"pk": {"S": pk}} for pk in pks[start:start + BATCH_GET_KEYS]],
                "ConsistentRead": True}}
            for attempt in range(BATCH_GET_TRIES):
                if attempt:  # what DynamoDB left unread (throttled): back off, then again
                    time.sleep(min(0.05 * 2 ** attempt, 1.0))
                response = self._db.batch_get_item(RequestItems=wanted)
                for item in response.get("Responses", {}).get(self._table, []):
                    found[item["pk"]["S"]] = item
                wanted = dict(response.get("UnprocessedKeys") or {})
                if not wanted:
                    break
            else:
                raise StoreUnavailable("DynamoDB kept throttling the read of a page's items")
        return found

    async def failed_between(
        self, sender_id: str, destination: str | None, since: datetime, until: datetime,
        limit: int,
    ) -> Sequence[Message]:
        return await asyncio.to_thread(self._failed_between, sender_id, destination, since,
                                       until, limit)

    def _failed_between(self, sender_id: str, destination: str | None, since: datetime,
                        until: datetime, limit: int) -> Sequence[Message]:
        """Queries of the sender's FAILED shards of `bySenderStatus` (no table scan), the
        matches read and filtered by failure time and destination, oldest created first;
        it stops at `limit` matches."""
        since_text = since.astimezone(UTC).isoformat()  # compared as text: stored in UTC
        until_text = until.astimezone(UTC).isoformat()

        def shard_keys(shard: int) -> list[tuple[str, str]]:
            query: dict[str, Any] = {
                "TableName": self._table, "IndexName": "bySenderStatus",
                "KeyConditionExpression": "statusShard = :p", "ScanIndexForward": True,
                # updatedAt is projected into this index for this filter alone
                "FilterExpression": "updatedAt >= :since AND updatedAt < :until",
                "ExpressionAttributeValues": {
                    ":p": {"S": f"{sender_id}#{Status.FAILED.value}#{shard}"},
                    ":since": {"S": since_text}, ":until": {"S": until_text}}}
            # the oldest `limit` of a shard are all the merge needs, unless a destination
            # filters the items read after (destination is not in the index)
            wanted = limit if destination is None else None
            keys: list[tuple[str, str]] = []
            while wanted is None or len(keys) < wanted:
                response = self._db.query(**query)
                keys += [(item["sortKey"]["S"], item["pk"]["S"])
                         for item in response.get("Items", [])]
                last = response.get("LastEvaluatedKey")
                if not last:
                    break
                query["ExclusiveStartKey"] = last
            return keys if wanted is None else keys[:wanted]

        with ThreadPoolExecutor(max_workers=8) as pool:
            candidates = sorted(key for keys in pool.map(shard_keys, range(SENDER_SHARDS))
                                for key in keys)
        found: list[Message] = []
        for start in range(0, len(candidates), BATCH_GET_KEYS):
            chunk = [pk for _, pk in candidates[start:start + BATCH_GET_KEYS]]
            items = self._items(chunk)
            for pk in chunk:
                item = items.get(pk)
                if (item is None or item["status"]["S"] != Status.FAILED.value
                        or not since_text <= item["updatedAt"]["S"] < until_text):
                    continue
                message = self._message(item, None)
                if destination is None or message.destination == destination:
                    found.append(message)
                    if len(found) >= limit:
                        return found
        return found

    async def expire(self, changed_before: datetime, limit: int) -> int:
        """None here: every final item carries `expiresAt`, and DynamoDB's TTL deletes it."""
        return 0

    async def unqueued(self, created_before: datetime, limit: int) -> Sequence[Message]:
        """None: the outbox queues every message its write marks queued."""
        return []

    async def ping(self) -> None:
        await asyncio.to_thread(self._db.describe_table, TableName=self._table)
