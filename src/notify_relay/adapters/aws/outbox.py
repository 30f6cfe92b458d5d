"""The outbox: the messages table's stream, read by a Lambda, queues what was stored.

A write that leaves a message QUEUED and marked queued, when it was not both before (a new
message, a retry by hand, an outcome notice let go), is sent to the work queue (its shard
by destination: adapters/aws/sqs.py) after it has committed. Lambda reads the stream at
least once and in order per shard; a batch that cannot be sent in full reports the first
record not sent, and Lambda retries from there, so a record is never skipped. A duplicate
SQS entry is harmless (the worker's writes are conditional), a missing one is what the
outbox exists to prevent.

Records arrive as Lambda puts them in the event: DynamoDB JSON with binary values in
base64; `image_of` turns an image back into an item as the DynamoDB client returns it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from notify_relay.adapters.aws.dynamodb import message_of_item
from notify_relay.domain.message import MessageKey
from notify_relay.domain.status import Status
from notify_relay.ports import Entry

if TYPE_CHECKING:
    from notify_relay.adapters.aws.sqs import SqsQueue

log = logging.getLogger("notify_relay.outbox")
SEND_BATCH = 10  # SQS SendMessageBatch's limit: one call per ten entries


def image_of(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stream image with its top-level binary values decoded (the item's `doc` and an
    inline `body`; nested values are not read)."""
    return {name: ({"B": base64.b64decode(value["B"])}
                   if isinstance(value, Mapping) and isinstance(value.get("B"), str)
                   else value)
            for name, value in raw.items()}


def _queued(image: Mapping[str, Any] | None) -> bool:
    return (image is not None and image.get("status", {}).get("S") == Status.QUEUED.value
            and image.get("queued", {}).get("BOOL") is True)


def entry_for(record: Mapping[str, Any]) -> Entry | None:
    """The queue entry a stream record calls for, or None (most writes: an attempt's
    start and outcome, a cancel, a TTL deletion)."""
    if record.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    change = record.get("dynamodb") or {}
    new, old = change.get("NewImage"), change.get("OldImage")
    if new is None or not _queued(new) or _queued(old):
        return None
    try:
        message = message_of_item(image_of(new))
    except Exception as exc:  # never block the shard on one item
        # queued all the same, due now: the worker cannot read it either and quarantines
        # it (a metric and an ERROR line), where a failure here would hold every record
        # of the shard behind it for the stream's 24 hours
        key = MessageKey(new["sender"]["S"], new["messageId"]["S"])
        log.error("a stored message cannot be read; queued for the worker to quarantine",
                  extra={"messageId": key.message_id, "senderId": key.sender_id,
                         "error": f"{type(exc).__name__}: {exc}"[:300]})
        return Entry(key, datetime.now(UTC))
    return Entry(message.key, message.next_attempt_at or message.created_at,
                 message.correlation_id, message.destination)


@dataclass(frozen=True, slots=True)
class Forwarded:
    queued: int  # entries sent
    retry_from: str | None  # the first record not queued (sequence number), if any


async def forward(records: Sequence[Mapping[str, Any]], queue: SqsQueue) -> Forwarded:
    """Queue what the records call for, ten entries of one shard a call (the work queue's
    shard by destination), the calls at once. Lambda retries from `retry_from`, the
    earliest record of a call that failed (the later ones again too: a duplicate entry is
    harmless, a gap is not)."""
    by_shard: dict[int, list[tuple[int, str, Entry]]] = {}
    for position, record in enumerate(records):
        entry = entry_for(record)
        if entry is not None:
            by_shard.setdefault(queue.shard_of(entry), []).append(
                (position, record["dynamodb"]["SequenceNumber"], entry))
    chunks = [group[start:start + SEND_BATCH] for group in by_shard.values()
              for start in range(0, len(group), SEND_BATCH)]
    results = await asyncio.gather(
        *(queue.enqueue_many([entry for _, _, entry in chunk]) for chunk in chunks),
        return_exceptions=True)
    failed = [(chunk[0], result) for chunk, result in zip(chunks, results, strict=True)
              if isinstance(result, BaseException)]
    retry_from = None
    if failed:
        (_, retry_from, _), error = min(failed, key=lambda f: f[0][0])
        log.warning("queueing from the outbox failed; Lambda retries from this record",
                    extra={"sequenceNumber": retry_from,
                           "error": f"{type(error).__name__}: {error}"[:300]})
    for chunk, result in zip(chunks, results, strict=True):
        if isinstance(result, BaseException):
            continue
        for _, _, entry in chunk:
            log.info("queued by the outbox", extra={
                "messageId": entry.key.message_id, "senderId": entry.key.sender_id,
                "correlationId": entry.correlation_id})
    sent = sum(len(chunk) for chunk, result in zip(chunks, results, strict=True)
               if not isinstance(result, BaseException))
    return Forwarded(sent, retry_from)
