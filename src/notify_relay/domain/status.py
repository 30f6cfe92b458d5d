"""The status machine: which status may follow which."""

from __future__ import annotations

from enum import StrEnum

from notify_relay.domain.errors import InvalidTransition


class Status(StrEnum):
    QUEUED = "QUEUED"
    DELIVERING = "DELIVERING"
    RETRYING = "RETRYING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """No attempt will follow (FAILED and CANCELLED until retried by hand)."""
        return self in (Status.DELIVERED, Status.FAILED, Status.CANCELLED)


# A message is cancelled only while it waits: an attempt in flight (DELIVERING) may
# already have reached the partner, so it cannot be taken back.
# DELIVERING -> RETRYING also covers an attempt cut short by a crash: the next claim
# records it as interrupted before it starts a new one.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.DELIVERING, Status.CANCELLED}),
    Status.DELIVERING: frozenset({Status.DELIVERED, Status.RETRYING, Status.FAILED}),
    Status.RETRYING: frozenset({Status.DELIVERING, Status.CANCELLED}),
    Status.DELIVERED: frozenset(),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
}


def check_transition(current: Status, new: Status) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"{current} -> {new} is not allowed")
