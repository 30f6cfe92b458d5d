"""Destinations: where a message goes, and the rules that keep one partner from holding
back the others. Pure functions of (state, event, clock); no I/O.

- The circuit breaker (`Breaker`, `breaker_after`): failures in a row open it, an
  exponential jittered cool-down follows, then one probe decides.
- Adaptive concurrency (`adapt_concurrency`): additive increase, multiplicative decrease,
  as TCP does, so a partner that is merely slow is not hammered into failing.
- The admission rule (`admission`): how many attempts a destination may start now, or
  when it may start again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from notify_relay.domain.retry import AttemptResult, ErrorKind, is_success, parse_retry_after

NAME_PATTERN = r"^[A-Za-z0-9._:@\-\[\]]{1,128}$"  # a custom name, as a sender gives it
# the longest default name: a DNS name of 253 with its root's dot, `:` and a 5-digit port
MAX_DEFAULT_NAME_LENGTH = 253 + 1 + 1 + 5
# any name a destination can have, custom or default: what the lookups take (a host of
# 143 characters made a destination no one could read, pause or limit)
LOOKUP_NAME_PATTERN = rf"^[A-Za-z0-9._:@\-\[\]]{{1,{MAX_DEFAULT_NAME_LENGTH}}}$"
_NAME = re.compile(NAME_PATTERN)
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_CONCURRENCY_LIMIT = 1000


def is_valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def default_destination(target_url: str) -> str:
    """`host:port` of the target, lower case, port always written, IPv6 in brackets."""
    parts = urlsplit(target_url)
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True, order=True)
class DestinationKey:
    sender_id: str
    name: str


# -- what an attempt's result means for its destination ------------------------------------


class Signal(StrEnum):
    """An attempt's result as the destination's rules see it."""

    SUCCESS = "SUCCESS"  # a 2xx or a permanent answer: the partner is there
    FAILURE = "FAILURE"  # timeout, connection error, 408, 425, 429, 5xx
    NEUTRAL = "NEUTRAL"  # not the partner's doing: refused by policy, invalid, interrupted


_NEUTRAL_KINDS = frozenset({ErrorKind.TARGET_NOT_ALLOWED, ErrorKind.INVALID_REQUEST,
                            ErrorKind.INTERRUPTED})
_FAILURE_STATUSES = frozenset({408, 425, 429})


def signal_of(result: AttemptResult) -> Signal:
    if result.status_code is not None:
        code = result.status_code
        return Signal.FAILURE if code in _FAILURE_STATUSES or code >= 500 else Signal.SUCCESS
    if result.error_kind is None or result.error_kind in _NEUTRAL_KINDS:
        return Signal.NEUTRAL
    return Signal.FAILURE


def is_overload(result: AttemptResult) -> bool:
    """The partner asks for less: a 429, a 503 or a timeout cuts the concurrency."""
    return result.status_code in (429, 503) or result.error_kind is ErrorKind.TIMEOUT


def hold_until(result: AttemptResult, now: datetime, cap_seconds: float) -> datetime | None:
    """A 429 or 503 with Retry-After holds the whole destination until then (capped)."""
    if result.status_code not in (429, 503):
        return None
    delay = parse_retry_after(result.retry_after, now)
    if delay is None or delay <= 0:
        return None
    return now + timedelta(seconds=min(delay, cap_seconds))


# -- the circuit breaker -------------------------------------------------------------------


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    jitter: float = 0.2


@dataclass(frozen=True, slots=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    openings: int = 0  # openings in a row, without a success between: sets the cool-down
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    # the probe's turn is taken until then: while OPEN by an attempt admitted as the probe
    # and not sent yet (its message may turn out cancelled), while HALF_OPEN by the probe
    # in flight; a probe whose worker died frees the way after it
    probe_until: datetime | None = None


# what every success leaves: one shared instance (frozen), so that a destination whose
# attempts succeed keeps the very same breaker, which the gate then compares by identity
CLOSED_BREAKER = Breaker()


def cooldown_seconds(openings: int, config: BreakerConfig, rand: Callable[[], float]) -> float:
    """Cool-down of the n-th opening in a row: doubled each time, capped, minus jitter."""
    base = min(config.max_cooldown, config.cooldown * 2.0 ** min(openings - 1, 32))
    return base * (1.0 - config.jitter * rand())


def _opened(breaker: Breaker, now: datetime, config: BreakerConfig,
            rand: Callable[[], float]) -> Breaker:
    openings = breaker.openings + 1
    return replace(breaker, state=BreakerState.OPEN, openings=openings, opened_at=now,
                   next_probe_at=now + timedelta(seconds=cooldown_seconds(openings, config, rand)),
                   probe_until=None)


def breaker_after(
    breaker: Breaker, signal: Signal, now: datetime, config: BreakerConfig,
    rand: Callable[[], float], *, probe: bool = False,
) -> Breaker:
    """The breaker once an attempt's result is known; `probe` marks the half-open probe."""
    if signal is Signal.SUCCESS:
        return CLOSED_BREAKER
    if signal is Signal.NEUTRAL:
        if probe and breaker.state is not BreakerState.CLOSED:
            return probe_returned(breaker)  # no verdict: another probe may go
        return breaker
    failures = breaker.consecutive_failures + 1
    if breaker.state is BreakerState.HALF_OPEN or (probe and breaker.state is BreakerState.OPEN):
        if not probe:  # a straggler from before the opening: the probe decides
            return replace(breaker, consecutive_failures=failures)
        return _opened(replace(breaker, consecutive_failures=failures), now, config, rand)
    if breaker.state is BreakerState.OPEN:
        return replace(breaker, consecutive_failures=failures)
    if failures >= config.failures:
        return _opened(replace(breaker, consecutive_failures=failures), now, config, rand)
    return replace(breaker, consecutive_failures=failures)


def probe_returned(breaker: Breaker) -> Breaker:
    """No probe in flight, and no verdict (not sent, a neutral result, its worker gone): the
    breaker is OPEN past its cool-down, and the next attempt is the probe. HALF_OPEN means
    one probe in flight: left so, it showed that with nothing in flight until a new message
    came."""
    if breaker.state is BreakerState.CLOSED:
        return breaker
    return replace(breaker, state=BreakerState.OPEN, probe_until=None)


def breaker_probe_reserved(breaker: Breaker, now: datetime, probe_seconds: float) -> Breaker:
    """An attempt admitted as the probe: no other goes, the state stays until it is sent."""
    return replace(breaker, probe_until=now + timedelta(seconds=probe_seconds))


def breaker_probe_started(breaker: Breaker, now: datetime, probe_seconds: float) -> Breaker:
    """The probe is sent: HALF_OPEN means one probe attempt in flight (the contract)."""
    return replace(breaker, state=BreakerState.HALF_OPEN,
                   probe_until=now + timedelta(seconds=probe_seconds))


# -- adaptive concurrency ------------------------------------------------------------------

DECREASE_FACTOR = 0.5


def adapt_concurrency(
    current: float, cap: int, result: AttemptResult, started_at: datetime,
    last_decrease_at: datetime | None, now: datetime,
) -> tuple[float, datetime | None]:
    """AIMD: halve on overload, grow by one per window of successes, within [1, cap].

    Of the attempts that were in flight together, only the first overload cuts: one
    started before the last cut belongs to the same congestion event (as TCP counts one
    loss per round trip), so sixteen timeouts at once halve once, not sixteen times.
    """
    current = min(current, float(cap))
    if is_overload(result):
        if last_decrease_at is not None and started_at < last_decrease_at:
            return current, last_decrease_at
        return max(1.0, current * DECREASE_FACTOR), now
    if signal_of(result) is Signal.SUCCESS and current < cap:
        return min(float(cap), current + 1.0 / current), last_decrease_at
    return current, last_decrease_at


# -- a destination and its admission -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    paused: bool = False
    max_concurrency: int | None = None  # None: the server default
    rate_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    key: DestinationKey
    settings: DestinationSettings = field(default_factory=DestinationSettings)
    breaker: Breaker = field(default_factory=Breaker)
    concurrency: float | None = None  # the adaptive limit; None: not cut, the cap applies
    last_decrease_at: datetime | None = None
    held_until: datetime | None = None
    rate_next_at: datetime | None = None  # the earliest start the rate allows (GCRA's TAT)
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    version: int = 0

    def cap(self, default: int) -> int:
        return self.settings.max_concurrency or default

    def current_concurrency(self, default: int) -> int:
        cap = self.cap(default)
        return cap if self.concurrency is None else max(1, min(cap, math.floor(self.concurrency)))

    def with_settings(self, settings: DestinationSettings) -> Destination:
        """A new rate spaces the next start from the last one by itself, not by the old
        rate (a rate of almost nothing, set by mistake, held the next start a century)."""
        rate, rate_next_at = settings.rate_per_second, self.rate_next_at
        old_rate = self.settings.rate_per_second
        if rate != old_rate:
            # the last start the rate let through (its clock is one interval past it; it
            # may still be in flight), else the last attempt's
            last = (rate_next_at - rate_interval(old_rate)
                    if old_rate is not None and rate_next_at is not None
                    else self.last_attempt_at)
            rate_next_at = last + rate_interval(rate) if rate is not None and last else None
        return replace(self, settings=settings, rate_next_at=rate_next_at)

    def with_version(self, version: int) -> Destination:
        return replace(self, version=version)


class Blocked(StrEnum):
    PAUSED = "PAUSED"
    OPEN = "OPEN"  # cooling down, or its one probe is in flight
    HELD = "HELD"  # Retry-After
    AT_CAP = "AT_CAP"
    RATE = "RATE"


@dataclass(frozen=True, slots=True)
class Admission:
    """How many attempts may start now (`slots`), else why not and until when.

    `ready_at` None with a reason: no time is known (paused, or until a slot frees).
    """

    slots: int
    probe: bool = False
    blocked: Blocked | None = None
    ready_at: datetime | None = None


def admission(dest: Destination, now: datetime, in_flight: int, default_cap: int) -> Admission:
    if dest.settings.paused:
        return Admission(0, blocked=Blocked.PAUSED)
    if dest.held_until is not None and dest.held_until > now:
        return Admission(0, blocked=Blocked.HELD, ready_at=dest.held_until)
    breaker = dest.breaker
    probe = False
    if breaker.state is BreakerState.OPEN and breaker.next_probe_at is not None \
            and breaker.next_probe_at > now:  # cooling down
        return Admission(0, blocked=Blocked.OPEN, ready_at=breaker.next_probe_at)
    if breaker.state is not BreakerState.CLOSED:
        if breaker.probe_until is not None and breaker.probe_until > now:  # the probe's turn
            return Admission(0, blocked=Blocked.OPEN, ready_at=breaker.probe_until)
        probe = True
    slots = dest.current_concurrency(default_cap) - in_flight
    if slots <= 0:
        return Admission(0, blocked=Blocked.AT_CAP)
    if dest.settings.rate_per_second is not None:
        if dest.rate_next_at is not None and dest.rate_next_at > now:
            return Admission(0, blocked=Blocked.RATE, ready_at=dest.rate_next_at)
        slots = 1
    return Admission(1 if probe else slots, probe=probe)


def started(dest: Destination, now: datetime, *, probe: bool, probe_seconds: float) -> Destination:
    """The destination once an attempt is admitted: the rate's clock moves on, a probe
    takes the probe's turn (HALF_OPEN once it is sent: breaker_probe_started). Its
    lastAttemptAt waits for the attempt's result (finished): an admitted attempt may
    never be sent, its message found cancelled."""
    changes: dict[str, object] = {}
    rate = dest.settings.rate_per_second
    if rate is not None:
        changes["rate_next_at"] = max(dest.rate_next_at or now, now) + rate_interval(rate)
    if probe:
        changes["breaker"] = breaker_probe_reserved(dest.breaker, now, probe_seconds)
    # no rate and no probe, most admissions: nothing to copy (replace() took 8 us)
    return replace(dest, **changes) if changes else dest  # type: ignore[arg-type]


# the contract takes any rate above 0: one of 1e-12/s would put the next start 31,700 years
# ahead, past what a date can hold (the start failed, at once and again, in a loop)
LONGEST_RATE_INTERVAL_SECONDS = 100 * 365 * 86400.0


def rate_interval(rate: float) -> timedelta:
    """The time between two starts at `rate` a second, at most a century."""
    return timedelta(seconds=min(1.0 / rate, LONGEST_RATE_INTERVAL_SECONDS))


@dataclass(frozen=True, slots=True)
class Rules:
    """Server-wide settings of the destination rules."""

    default_concurrency: int = 16
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    retry_after_cap: float = 3600.0


def finished(
    dest: Destination, result: AttemptResult, *, started_at: datetime, now: datetime,
    probe: bool, rules: Rules, rand: Callable[[], float],
) -> Destination:
    """The destination once an attempt's result is known: breaker, holds, concurrency."""
    signal = signal_of(result)
    cap = dest.cap(rules.default_concurrency)
    concurrency, last_decrease = adapt_concurrency(
        dest.concurrency if dest.concurrency is not None else float(cap), cap, result,
        started_at, dest.last_decrease_at, now)
    held = hold_until(result, now, rules.retry_after_cap)
    held_until = (held if held is not None and (dest.held_until is None or held > dest.held_until)
                  else dest.held_until)
    # a permanent 4xx is a success to the breaker (the partner is there), not a delivery:
    # shown as the last success, it told an operator that a partner refusing everything
    # with 422 was fine, with no error
    last_success_at, last_error = dest.last_success_at, dest.last_error
    if is_success(result.status_code):
        last_success_at = now
    elif result.description is not None:
        last_error = result.description
    # every attempt's result makes one: built field by field, not by replace() (6.5 us)
    return Destination(
        key=dest.key,
        settings=dest.settings,
        breaker=breaker_after(dest.breaker, signal, now, rules.breaker, rand, probe=probe),
        concurrency=None if concurrency >= cap else concurrency,
        last_decrease_at=last_decrease,
        held_until=held_until,
        rate_next_at=dest.rate_next_at,
        last_attempt_at=max(started_at, dest.last_attempt_at or started_at),
        last_success_at=last_success_at,
        last_error=last_error,
        version=dest.version,
    )


def fair_shares(
    ready: Sequence[tuple[DestinationKey, int]], limit: int
) -> dict[DestinationKey, int]:
    """Split `limit` claims among destinations that may start (key, slots), in the order
    given (least recently served first): an equal share each first, then what is left to
    those with slots to spare, so a big backlog never crowds out the small ones."""
    shares: dict[DestinationKey, int] = {}
    if not ready or limit <= 0:
        return shares
    remaining = limit
    equal = max(1, limit // len(ready))
    for bound in (equal, None):
        for key, slots in ready:
            if remaining <= 0:
                return shares
            have = shares.get(key, 0)
            take = min(slots, equal if bound is not None else slots) - have
            take = min(take, remaining)
            if take > 0:
                shares[key] = have + take
                remaining -= take
    return shares
