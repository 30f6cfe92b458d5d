"""When to try again: a pure function from an attempt's result to a decision.

The default schedule follows the spirit of Svix and Standard Webhooks (5 s, minutes,
then hours): 12 attempts, 5 s first delay, x3 each time, capped at 2 h, with up to
20 % jitter taken off. Its retries span 7.6 h to 9.5 h, so a partner outage of several
hours loses nothing.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from notify_relay.domain.response import PartnerResponse


class Outcome(StrEnum):
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    GIVE_UP = "GIVE_UP"


class ErrorKind(StrEnum):
    """Failures without an HTTP status, split by whether a later try can help."""

    TIMEOUT = "TIMEOUT"
    CONNECTION = "CONNECTION"
    INTERRUPTED = "INTERRUPTED"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    INVALID_REQUEST = "INVALID_REQUEST"

    @property
    def retryable(self) -> bool:
        return self in (ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.INTERRUPTED)


RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 12
    initial_delay: float = 5.0
    max_delay: float = 7200.0


@dataclass(frozen=True, slots=True)
class RetryLimits:
    """Server-wide settings and caps that a request's policy cannot exceed."""

    default_policy: RetryPolicy = RetryPolicy()
    max_attempts_cap: int = 100
    max_delay_cap: float = 86400.0
    retry_after_cap: float = 3600.0
    multiplier: float = 3.0
    jitter: float = 0.2
    default_timeout: float = 30.0
    max_timeout: float = 120.0

    def longest_span(self) -> float:
        """Seconds from a message's first attempt to its last at most, under the caps:
        every attempt times out and waits the longest delay or Retry-After. What must
        outlive it (an S3 body) is sized from this, not from the default policy."""
        wait = max(self.max_delay_cap, self.retry_after_cap)
        return self.max_attempts_cap * (self.max_timeout + wait)

    def effective_policy(
        self,
        max_attempts: int | None,
        initial_delay: float | None,
        max_delay: float | None,
    ) -> RetryPolicy:
        base = self.default_policy
        capped_max_delay = min(max_delay if max_delay is not None else base.max_delay,
                               self.max_delay_cap)
        initial = min(initial_delay if initial_delay is not None else base.initial_delay,
                      capped_max_delay)
        attempts = min(max_attempts if max_attempts is not None else base.max_attempts,
                       self.max_attempts_cap)
        return RetryPolicy(max_attempts=attempts, initial_delay=initial,
                           max_delay=capped_max_delay)

    def effective_timeout(self, requested: float | None) -> float:
        return min(requested if requested is not None else self.default_timeout,
                   self.max_timeout)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one try produced: an HTTP status, or an error of some kind."""

    status_code: int | None = None
    error_kind: ErrorKind | None = None
    error: str | None = None
    retry_after: str | None = None
    response: PartnerResponse | None = None  # what the partner answered, if it did
    # a second try went at once, a kept connection having dropped the first before its
    # answer (adapters/http.py): the partner may have had the request twice in this attempt
    sent_twice: bool = False

    @property
    def description(self) -> str | None:
        if self.error is not None:
            return self.error
        if self.status_code is not None and not is_success(self.status_code):
            return f"HTTP {self.status_code}"
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    retry_at: datetime | None = None


def is_success(status_code: int | None) -> bool:
    """A 2xx: the contract's success."""
    return status_code is not None and 200 <= status_code < 300


def is_retryable(result: AttemptResult) -> bool:
    if result.status_code is not None:
        return result.status_code in RETRYABLE_STATUSES or 500 <= result.status_code < 600
    return result.error_kind is not None and result.error_kind.retryable


def backoff_delay(
    attempt_in_round: int, policy: RetryPolicy, limits: RetryLimits, rand: Callable[[], float]
) -> float:
    """Delay after the n-th attempt (1-based): capped exponential, minus up to `jitter`."""
    exponent = min(attempt_in_round - 1, 64)  # beyond that the cap has long won
    base = min(policy.max_delay, policy.initial_delay * limits.multiplier**exponent)
    return base * (1.0 - limits.jitter * rand())


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" and other Unicode digits are not
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def decide(
    result: AttemptResult,
    *,
    attempt_in_round: int,
    policy: RetryPolicy,
    limits: RetryLimits,
    now: datetime,
    rand: Callable[[], float],
) -> Decision:
    """SUCCESS, RETRY at a time, or GIVE_UP, for the attempt numbered `attempt_in_round`."""
    if is_success(result.status_code):
        return Decision(Outcome.SUCCESS)
    if not is_retryable(result) or attempt_in_round >= policy.max_attempts:
        return Decision(Outcome.GIVE_UP)
    delay = backoff_delay(attempt_in_round, policy, limits, rand)
    asked = parse_retry_after(result.retry_after, now)
    if asked is not None:  # later when the partner asks, never sooner than the backoff
        delay = max(delay, min(asked, limits.retry_after_cap))
    return Decision(Outcome.RETRY, now + timedelta(seconds=delay))
