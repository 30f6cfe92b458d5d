"""The retry policy as one table: result -> SUCCESS / RETRY at T / GIVE_UP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.domain.retry import (
    AttemptResult,
    ErrorKind,
    Outcome,
    RetryLimits,
    RetryPolicy,
    backoff_delay,
    decide,
    parse_retry_after,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, initial_delay=10.0, max_delay=1000.0)
LIMITS = RetryLimits(jitter=0.2, multiplier=3.0, retry_after_cap=3600.0)


def no_jitter() -> float:
    return 0.0


def full_jitter() -> float:
    return 1.0


def status(code: int, retry_after: str | None = None) -> AttemptResult:
    return AttemptResult(status_code=code, retry_after=retry_after)


def error(kind: ErrorKind) -> AttemptResult:
    return AttemptResult(error_kind=kind, error=kind.value)


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (status(200), Outcome.SUCCESS),
        (status(201), Outcome.SUCCESS),
        (status(204), Outcome.SUCCESS),
        (status(299), Outcome.SUCCESS),
        (status(100), Outcome.GIVE_UP),
        (status(301), Outcome.GIVE_UP),
        (status(302), Outcome.GIVE_UP),
        (status(307), Outcome.GIVE_UP),
        (status(400), Outcome.GIVE_UP),
        (status(401), Outcome.GIVE_UP),
        (status(403), Outcome.GIVE_UP),
        (status(404), Outcome.GIVE_UP),
        (status(410), Outcome.GIVE_UP),
        (status(422), Outcome.GIVE_UP),
        (status(408), Outcome.RETRY),
        (status(425), Outcome.RETRY),
        (status(429), Outcome.RETRY),
        (status(500), Outcome.RETRY),
        (status(502), Outcome.RETRY),
        (status(503), Outcome.RETRY),
        (status(504), Outcome.RETRY),
        (status(599), Outcome.RETRY),
        (error(ErrorKind.TIMEOUT), Outcome.RETRY),
        (error(ErrorKind.CONNECTION), Outcome.RETRY),
        (error(ErrorKind.INTERRUPTED), Outcome.RETRY),
        (error(ErrorKind.TARGET_NOT_ALLOWED), Outcome.GIVE_UP),
        (error(ErrorKind.INVALID_REQUEST), Outcome.GIVE_UP),
    ],
)
def test_outcome_by_result(result: AttemptResult, outcome: Outcome) -> None:
    decision = decide(result, attempt_in_round=1, policy=POLICY, limits=LIMITS, now=NOW,
                      rand=no_jitter)
    assert decision.outcome is outcome
    assert (decision.retry_at is not None) == (outcome is Outcome.RETRY)


@pytest.mark.parametrize(
    ("attempt", "expected_delay"),
    [(1, 10.0), (2, 30.0), (3, 90.0), (4, 270.0)],
)
def test_exponential_backoff_without_jitter(attempt: int, expected_delay: float) -> None:
    decision = decide(status(503), attempt_in_round=attempt, policy=POLICY, limits=LIMITS,
                      now=NOW, rand=no_jitter)
    assert decision.retry_at == NOW + timedelta(seconds=expected_delay)


def test_backoff_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=100, initial_delay=10.0, max_delay=1000.0)
    assert backoff_delay(7, policy, LIMITS, no_jitter) == 1000.0
    assert backoff_delay(99, policy, LIMITS, no_jitter) == 1000.0


@pytest.mark.parametrize("attempt", range(1, 12))
@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.999999, 1.0])
def test_jitter_bounds(attempt: int, rand: float) -> None:
    policy = RetryPolicy(max_attempts=100, initial_delay=5.0, max_delay=7200.0)
    base = backoff_delay(attempt, policy, LIMITS, no_jitter)
    delay = backoff_delay(attempt, policy, LIMITS, lambda: rand)
    assert base * (1 - LIMITS.jitter) <= delay <= base <= policy.max_delay


def test_jitter_spreads_delays() -> None:
    import random

    rng = random.Random(7)
    delays = {backoff_delay(3, POLICY, LIMITS, rng.random) for _ in range(50)}
    assert len(delays) > 40
    assert min(delays) >= 90 * 0.8
    assert max(delays) <= 90


def test_last_attempt_gives_up_even_when_retryable() -> None:
    for result in (status(503), error(ErrorKind.TIMEOUT)):
        decision = decide(result, attempt_in_round=5, policy=POLICY, limits=LIMITS, now=NOW,
                          rand=no_jitter)
        assert decision.outcome is Outcome.GIVE_UP


def test_success_on_last_attempt_is_success() -> None:
    decision = decide(status(200), attempt_in_round=5, policy=POLICY, limits=LIMITS, now=NOW,
                      rand=no_jitter)
    assert decision.outcome is Outcome.SUCCESS


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Sat, 28 Nov 2026 12:05:00 GMT", 300.0),
        ("Sat, 28 Nov 2026 11:00:00 GMT", 0.0),  # in the past: at once
        ("-5", None),
        ("soon", None),
        ("1.5", None),
        ("", None),
        (None, None),
        ("\u00b2", None),  # "²".isdigit() is true, and float() refuses it
        ("\u0661\u0662", None),  # Arabic-Indic digits: not delta-seconds
        ("99999999999999999999999999", 99999999999999999999999999.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("code", "header", "delay"),
    [
        (429, "120", 120.0),
        (503, "Sat, 28 Nov 2026 12:10:00 GMT", 600.0),
        (429, "5000", 3600.0),  # beyond maxDelaySeconds (1000) yet capped server-wide (3600)
        (503, "2000", 2000.0),  # beyond maxDelaySeconds: honoured
        (429, "garbage", 10.0),  # unreadable: ordinary backoff
    ],
)
def test_retry_after_sets_next_delay(code: int, header: str, delay: float) -> None:
    decision = decide(status(code, header), attempt_in_round=1, policy=POLICY, limits=LIMITS,
                      now=NOW, rand=full_jitter if header == "garbage" else no_jitter)
    expected = delay * (1 - LIMITS.jitter) if header == "garbage" else delay
    assert decision.retry_at == NOW + timedelta(seconds=expected)


@pytest.mark.parametrize("header", ["0", "1", "Sat, 28 Nov 2026 11:00:00 GMT", "\u00b2"])
def test_retry_after_never_shortens_the_backoff(header: str) -> None:
    """`Retry-After: 0` (or a past date) once spent a whole budget in milliseconds."""
    for attempt, backoff in ((1, 10.0), (3, 90.0)):
        decision = decide(status(429, header), attempt_in_round=attempt, policy=POLICY,
                          limits=LIMITS, now=NOW, rand=no_jitter)
        assert decision.retry_at == NOW + timedelta(seconds=backoff)


def test_retry_after_ignored_on_permanent_failure() -> None:
    decision = decide(status(400, "10"), attempt_in_round=1, policy=POLICY, limits=LIMITS,
                      now=NOW, rand=no_jitter)
    assert decision.outcome is Outcome.GIVE_UP


def test_default_schedule_survives_hours_of_outage() -> None:
    limits = RetryLimits()
    policy = limits.default_policy
    shortest = sum(backoff_delay(n, policy, limits, full_jitter)
                   for n in range(1, policy.max_attempts))
    longest = sum(backoff_delay(n, policy, limits, no_jitter)
                  for n in range(1, policy.max_attempts))
    assert shortest > 7 * 3600
    assert longest < 10 * 3600


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ((None, None, None), RetryPolicy(12, 5.0, 7200.0)),
        ((3, 1.0, 60.0), RetryPolicy(3, 1.0, 60.0)),
        ((100, 1.0, 10 * 86400.0), RetryPolicy(100, 1.0, 86400.0)),
        ((None, 100000.0, None), RetryPolicy(12, 7200.0, 7200.0)),
    ],
)
def test_effective_policy_within_server_caps(
    requested: tuple[int | None, float | None, float | None], expected: RetryPolicy
) -> None:
    assert RetryLimits().effective_policy(*requested) == expected


def test_effective_timeout_capped() -> None:
    limits = RetryLimits(default_timeout=30.0, max_timeout=120.0)
    assert limits.effective_timeout(None) == 30.0
    assert limits.effective_timeout(5.0) == 5.0
    assert limits.effective_timeout(1000.0) == 120.0


def test_longest_span_bounds_every_schedule_the_caps_allow() -> None:
    """The most a request may ask for, with every attempt timing out and the partner
    asking for the longest Retry-After, still ends within longest_span()."""
    limits = RetryLimits()
    policy = limits.effective_policy(10**6, 10**9, 10**9)
    timeout = limits.effective_timeout(10**9)
    worst = sum(max(backoff_delay(n, policy, limits, no_jitter), limits.retry_after_cap)
                + timeout for n in range(1, policy.max_attempts + 1))
    assert worst <= limits.longest_span()
    assert limits.longest_span() == 100 * (86400.0 + 120.0)
