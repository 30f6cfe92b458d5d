"""Per-sender token buckets for the submission rate; time is passed in, so it stays pure.

The buckets are bounded: without keys the sender is whatever the body says, so a client
could otherwise grow the table without end. A full bucket is the same as none, so the
least recently used ones are forgotten first.
"""

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
    max_senders: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, sender_id: str, now: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is free."""
        bucket = self._buckets.pop(sender_id, None)  # re-inserted last: most recently used
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            while len(self._buckets) >= self.max_senders:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[sender_id] = bucket
        refill = (now - bucket.updated) * self.rate_per_second
        bucket.tokens = min(self.burst, bucket.tokens + refill)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_second

    def __len__(self) -> int:
        return len(self._buckets)

    @staticmethod
    def retry_after_header(wait_seconds: float) -> int:
        return max(1, math.ceil(wait_seconds))
