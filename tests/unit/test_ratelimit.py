"""The per-sender submission rate: token buckets, bounded in number."""

from __future__ import annotations

from notify_relay.domain.ratelimit import RateLimiter


def test_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_second=2, burst=3)
    assert [limiter.acquire("s", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("s", 0.0) == 0.5
    assert limiter.acquire("s", 0.5) == 0.0
    assert limiter.acquire("other", 0.5) == 0.0  # each sender has its own bucket


def test_buckets_are_bounded_forgetting_the_least_recently_used() -> None:
    """Without keys the sender comes from the body: one client could name a million."""
    limiter = RateLimiter(rate_per_second=1, burst=1, max_senders=100)
    limiter.acquire("busy", 0.0)
    for i in range(10_000):
        limiter.acquire(f"sender-{i}", 0.0)
        if i % 50 == 0:
            assert limiter.acquire("busy", 0.0) > 0  # kept: used recently, still empty
    assert len(limiter) == 100
