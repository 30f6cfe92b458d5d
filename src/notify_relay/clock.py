"""The wall clock, the default of every injectable `clock` (tests pass their own)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
