"""Per-sender token buckets for the submission rate; time is passed in, so it stays pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class RateLimiter:
    rate_per_second: float
    burst: float
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, sender_id: str, now: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is free."""
        bucket = self._buckets.get(sender_id)
        if bucket is None:
            bucket = self._buckets[sender_id] = _Bucket(self.burst, now)
        refill = (now - bucket.updated) * self.rate_per_second
        bucket.tokens = min(self.burst, bucket.tokens + refill)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_second

    @staticmethod
    def retry_after_header(wait_seconds: float) -> int:
        return max(1, math.ceil(wait_seconds))
