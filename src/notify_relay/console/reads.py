"""What the console reads beyond the contract's API: a small, read-only port.

The console's actions (retry, cancel, replay, pause) go through the JSON API; only the
overviews the API has no endpoint for (counts by status, activity per minute, a list
filtered by destination, id and time) come through here. An adapter never writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from notify_relay.domain.status import Status
from notify_relay.ports import Page


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Every field is optional; `id_prefix` matches the start of the message id; `since`
    (inclusive) and `until` (exclusive) bound when the message was created, or with
    `time_field="updated"` when it last changed (when it failed, for a FAILED one)."""

    status: Status | None = None
    destination: str | None = None
    id_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    time_field: Literal["created", "updated"] = "created"


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Messages that reached DELIVERED or FAILED in the minute that starts at `minute`
    (by their last change: a failed message retried since counts no more)."""

    minute: datetime
    delivered: int
    failed: int


class ConsoleReads(Protocol):
    async def counts(self, sender_id: str) -> Mapping[str, int]:
        """The sender's messages by status; statuses with none are left out."""
        ...

    async def per_minute(self, sender_id: str, since: datetime) -> Sequence[MinuteCount]:
        """Deliveries and failures of each minute from `since` on; minutes with neither
        are left out."""
        ...

    async def messages(self, sender_id: str, where: MessageFilter, limit: int,
                       cursor: str | None) -> Page:
        """The sender's messages that match, newest first, paged as MessageStore.list."""
        ...

    async def close(self) -> None:
        ...
