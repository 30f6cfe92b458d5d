"""WorkQueue on SQS, with delays beyond SQS's 15-minute limit by re-sending.

SQS delays a message by at most 900 s. A retry due later is sent with the longest delay
and carries its due time; a worker that receives it early re-sends it with the rest of the
delay (at most one hop per 15 minutes: four for an hour, 24 for the longest 6 h backoff).
Chosen over stretching the visibility timeout (its 12-hour cap counts from the first
receive, and every early receive counts toward maxReceiveCount, so a message retried for
hours would be redriven to the dead-letter queue) and over a scheduler (EventBridge
Scheduler: one schedule per retry, a second service and its quotas on the hot path). The
cost is one extra send and receive per 15 minutes of delay, paid only by slow retries.

In Lambda, the event source deletes the records a batch reports as processed; this adapter
then only sends (enqueue, reschedule, dead-letter). Standard queues deliver at least once
and can duplicate: the Relay's conditional updates make a duplicate harmless.

Shards. The work queue may be several SQS queues (shards), each with its own Lambda event
source, because one event source runs at most 1,000 batches at once. An entry goes to the
shard a stable hash of its destination (sender and name) picks, whoever sends it (the
outbox, a retry, a hold): one destination's entries stay in one shard, so a blocked
destination's returns crowd only that shard. An entry without a destination is placed by
its message. A receipt is valid only in the queue that gave it, so a claim names its
source; changing the shard count moves an entry to its new shard at its next send.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from notify_relay.clock import utcnow
from notify_relay.domain.message import MessageKey
from notify_relay.ports import Claim, DeadLetter, Entry, Slots

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_DELAY_SECONDS = 900
SEND_BATCH_SIZE = 10  # SendMessageBatch's limit


def encode_entry(key: MessageKey, due_at: datetime, dead_lettered: bool = False,
                 destination: str | None = None) -> str:
    entry: dict[str, object] = {"senderId": key.sender_id, "messageId": key.message_id,
             "dueAt": due_at.isoformat()}
    if destination:
        entry["destination"] = destination
    if dead_lettered:  # sent there by a worker, not moved there by the redrive policy
        entry["deadLettered"] = True
    return orjson.dumps(entry).decode()


def shard_of(key: MessageKey, destination: str | None, shards: int) -> int:
    """The shard of an entry: a hash of its destination, stable across processes and
    releases (Python's hash() is salted per process)."""
    if shards == 1:
        return 0
    name = (f"{key.sender_id}#{destination}" if destination
            else f"{key.sender_id}##{key.message_id}")
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % shards


def queue_name(url_or_arn: str) -> str:
    """A queue's name, from its URL (.../account/name) or its ARN (...:account:name)."""
    return url_or_arn.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def decode_entry(body: str) -> tuple[MessageKey, datetime, str | None]:
    data = orjson.loads(body)
    return (MessageKey(data["senderId"], data["messageId"]), datetime.fromisoformat(data["dueAt"]),
            data.get("destination"))


class SqsQueue:
    exclusive_claims = False  # a standard queue may hand the same entry to two workers

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str | Sequence[str],
        dead_letter_url: str,
        *,
        deletes_by_caller: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """`queue_url`: the work queue, or its shards in order (every process must list
        the same, or a destination's entries would be split); `deletes_by_caller`:
        Lambda's event source deletes processed records itself."""
        self._urls = (queue_url,) if isinstance(queue_url, str) else tuple(queue_url)
        if not self._urls:
            raise ValueError("no work queue URL")
        self._by_name = {queue_name(url): url for url in self._urls}
        self._next_poll = 0  # claim(): the shard polled first, in turn
        self._sqs = sqs
        self._dlq_url = dead_letter_url
        self._deletes_by_caller = deletes_by_caller
        self._clock = clock

    def _message(self, key: MessageKey, due_at: datetime, correlation: str = "",
                 dead_lettered: bool = False, destination: str | None = None
                 ) -> dict[str, Any]:
        delay = (due_at - self._clock()).total_seconds()
        attributes: dict[str, Any] = {
            "messageId": {"DataType": "String", "StringValue": key.message_id},
            "senderId": {"DataType": "String", "StringValue": key.sender_id},
        }
        if correlation:
            attributes["correlationId"] = {"DataType": "String", "StringValue": correlation}
        return {
            "MessageBody": encode_entry(key, due_at, dead_lettered, destination),
            # rounded up: an entry that arrives early only comes back for the remainder
            "DelaySeconds": max(0, min(MAX_DELAY_SECONDS, math.ceil(delay))),
            "MessageAttributes": attributes,
        }

    @property
    def shards(self) -> int:
        return len(self._urls)

    def shard_of(self, entry: Entry) -> int:
        return shard_of(entry.key, entry.destination, len(self._urls))

    def _url_for(self, key: MessageKey, destination: str | None) -> str:
        return self._urls[shard_of(key, destination, len(self._urls))]

    def _source_url(self, claim: Claim) -> str:
        """The queue a claim was received from, where its receipt is valid."""
        if len(self._urls) == 1:
            return self._urls[0]
        url = self._by_name.get(claim.source or "")
        if url is None:
            raise ValueError(f"an entry from queue {claim.source!r}, which is none of this "
                             f"process's {len(self._urls)} work queues")
        return url

    def _send(self, url: str, key: MessageKey, due_at: datetime, correlation: str = "",
              dead_lettered: bool = False, destination: str | None = None) -> None:
        self._sqs.send_message(QueueUrl=url, **self._message(
            key, due_at, correlation, dead_lettered, destination))

    def _send_batch(self, url: str, entries: Sequence[Entry]) -> None:
        """SendMessageBatch to one queue, 10 entries a call; an entry SQS refuses raises,
        after the rest of its call went through (the caller enqueues again: idempotent
        enough)."""
        for start in range(0, len(entries), SEND_BATCH_SIZE):
            chunk = entries[start:start + SEND_BATCH_SIZE]
            batch: list[Any] = [
                {"Id": str(i), **self._message(e.key, e.due_at, e.correlation_id or "",
                                               destination=e.destination)}
                for i, e in enumerate(chunk)]
            response = self._sqs.send_message_batch(QueueUrl=url, Entries=batch)
            failed = response.get("Failed", [])
            if failed:
                raise RuntimeError(f"SQS refused {len(failed)} of {len(chunk)} entries: "
                                   f"{failed[0].get('Code')}: {failed[0].get('Message')}")

    async def enqueue_many(self, entries: Sequence[Entry]) -> None:
        """Each entry to its shard; the shards' calls at once. Raises if any failed."""
        by_shard: dict[int, list[Entry]] = {}
        for entry in entries:
            by_shard.setdefault(self.shard_of(entry), []).append(entry)
        results = await asyncio.gather(
            *(asyncio.to_thread(self._send_batch, self._urls[shard], group)
              for shard, group in by_shard.items()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def enqueue(
        self, key: MessageKey, due_at: datetime, correlation_id: str | None = None,
        destination: str = "",
    ) -> None:
        await asyncio.to_thread(self._send, self._url_for(key, destination), key, due_at,
                                correlation_id or "", False, destination)

    async def claim(
        self, limit: int, lease_seconds: float, slots: Slots | None = None
    ) -> Sequence[Claim]:
        """A poll, for running without Lambda's event source (tests, a plain worker): each
        shard once, starting with a different one each time, until `limit` entries are
        claimed (so that entries spread over shards fill a claim as one queue's would).

        SQS cannot select by destination: `slots` is ignored, and the Relay sends back, with
        a delay, what a destination cannot take."""
        claims: list[Claim] = []
        start = self._next_poll
        self._next_poll = (start + 1) % len(self._urls)
        for turn in range(len(self._urls)):
            if len(claims) >= limit:
                break
            url = self._urls[(start + turn) % len(self._urls)]
            response = await asyncio.to_thread(
                self._sqs.receive_message, QueueUrl=url,
                MaxNumberOfMessages=min(limit - len(claims), 10),
                VisibilityTimeout=int(lease_seconds), WaitTimeSeconds=0,
                MessageAttributeNames=["correlationId"])
            lease_until = self._clock() + timedelta(seconds=lease_seconds)
            for m in response.get("Messages", []):
                correlation = m.get("MessageAttributes", {}).get("correlationId")
                claims.append(self.claim_of(
                    m["Body"], m["ReceiptHandle"], lease_until,
                    correlation.get("StringValue") if correlation else None, url))
        return claims

    @staticmethod
    def claim_of(body: str, receipt: str, lease_until: datetime,
                 correlation_id: str | None = None, source: str | None = None) -> Claim:
        """`source`: the queue's ARN (a Lambda record's eventSourceARN) or URL."""
        key, _, destination = decode_entry(body)
        return Claim(key, receipt, lease_until, destination, correlation_id,
                     queue_name(source) if source else None)

    async def retry_in(self, claim: Claim, seconds: int) -> None:
        """The same entry visible again after `seconds` (its receive count goes on, so
        the redrive policy still moves one that keeps failing): for a failed step, where
        waiting out the whole visibility timeout (15 minutes) would stall it."""
        await asyncio.to_thread(self._sqs.change_message_visibility,
                                QueueUrl=self._source_url(claim),
                                ReceiptHandle=claim.receipt, VisibilityTimeout=seconds)

    async def complete(self, claim: Claim) -> None:
        if not self._deletes_by_caller:
            await asyncio.to_thread(self._sqs.delete_message, QueueUrl=self._source_url(claim),
                                    ReceiptHandle=claim.receipt)

    async def reschedule(self, claim: Claim, due_at: datetime) -> None:
        """Sent to its shard by the hash, the one it came from unless the count changed."""
        await asyncio.to_thread(self._send, self._url_for(claim.key, claim.destination),
                                claim.key, due_at, claim.correlation_id or "", False,
                                claim.destination)
        await self.complete(claim)

    async def dead_letter(self, claim: Claim) -> None:
        await asyncio.to_thread(self._send, self._dlq_url, claim.key, self._clock(),
                                claim.correlation_id or "", True, claim.destination)
        await self.complete(claim)

    async def peek_dead_letters(self, limit: int, hide_seconds: int = 30) -> list[DeadLetter]:
        """Up to `limit` dead-letter entries, hidden for `hide_seconds` but not removed."""
        found: list[DeadLetter] = []
        while len(found) < limit:
            response = await asyncio.to_thread(
                self._sqs.receive_message, QueueUrl=self._dlq_url,
                MaxNumberOfMessages=min(10, limit - len(found)),
                VisibilityTimeout=hide_seconds, WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                break
            for m in messages:
                try:
                    data = orjson.loads(m["Body"])
                    key: MessageKey | None = MessageKey(data["senderId"], data["messageId"])
                    by_worker = bool(data.get("deadLettered"))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    key, by_worker = None, False
                found.append(DeadLetter(key, by_worker, m["ReceiptHandle"]))
        return found

    async def drop_dead_letter(self, letter: DeadLetter) -> None:
        await asyncio.to_thread(self._sqs.delete_message, QueueUrl=self._dlq_url,
                                ReceiptHandle=letter.receipt)

    async def next_due(self, slots: Slots | None = None) -> datetime | None:
        return None  # SQS wakes its consumers itself

    async def recover(self) -> int:
        return 0  # leases end by themselves: the visibility timeout

    def _depth(self, url: str) -> int:
        response = self._sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible",
                                          "ApproximateNumberOfMessagesDelayed"])
        return sum(int(v) for v in response.get("Attributes", {}).values())

    async def depth(self) -> int:
        """Every shard's entries, summed."""
        depths = await asyncio.gather(*(asyncio.to_thread(self._depth, url)
                                        for url in self._urls))
        return sum(depths)

    async def ping(self) -> None:
        """Every shard answers (a missing one would strand its destinations' entries)."""
        await asyncio.gather(*(asyncio.to_thread(self._sqs.get_queue_attributes, QueueUrl=url,
                                                 AttributeNames=["QueueArn"])
                               for url in self._urls))
