"""The destination rules as tables: the breaker (state, event, clock -> state), adaptive
concurrency, admission, fair shares, and the default destination of a target."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta

import pytest

from notify_relay.domain.destination import (
    Blocked,
    Breaker,
    BreakerConfig,
    BreakerState,
    Destination,
    DestinationKey,
    DestinationSettings,
    Rules,
    Signal,
    adapt_concurrency,
    admission,
    breaker_after,
    breaker_probe_started,
    cooldown_seconds,
    default_destination,
    fair_shares,
    finished,
    hold_until,
    is_valid_name,
    signal_of,
    started,
)
from notify_relay.domain.retry import AttemptResult, ErrorKind

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CONFIG = BreakerConfig(failures=3, cooldown=30.0, max_cooldown=600.0, jitter=0.2)
KEY = DestinationKey("s", "api.partner.example:443")
CLOSED = Breaker()
S, F, N = Signal.SUCCESS, Signal.FAILURE, Signal.NEUTRAL


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def no_jitter() -> float:
    return 0.0


def status(code: int, retry_after: str | None = None) -> AttemptResult:
    return AttemptResult(status_code=code, retry_after=retry_after)


def error(kind: ErrorKind) -> AttemptResult:
    return AttemptResult(error_kind=kind, error=kind.value)


@pytest.mark.parametrize(
    ("result", "signal"),
    [
        (status(200), S), (status(204), S),
        (status(400), S), (status(404), S), (status(410), S), (status(302), S),  # permanent
        (status(408), F), (status(425), F), (status(429), F),
        (status(500), F), (status(502), F), (status(503), F), (status(504), F),
        (error(ErrorKind.TIMEOUT), F), (error(ErrorKind.CONNECTION), F),
        (error(ErrorKind.INTERRUPTED), N), (error(ErrorKind.TARGET_NOT_ALLOWED), N),
        (error(ErrorKind.INVALID_REQUEST), N),
    ],
)
def test_signal_of_each_result(result: AttemptResult, signal: Signal) -> None:
    assert signal_of(result) is signal


OPEN_1 = Breaker(BreakerState.OPEN, 3, 1, NOW, at(30))
HALF_1 = Breaker(BreakerState.HALF_OPEN, 3, 1, NOW, at(30), at(60))


@pytest.mark.parametrize(
    ("before", "signal", "probe", "after"),
    [
        # a run of failures opens it at the threshold, with the first cool-down
        (CLOSED, F, False, Breaker(consecutive_failures=1)),
        (Breaker(consecutive_failures=1), F, False, Breaker(consecutive_failures=2)),
        (Breaker(consecutive_failures=2), F, False, Breaker(BreakerState.OPEN, 3, 1, NOW, at(30))),
        # any success or permanent answer ends the run
        (Breaker(consecutive_failures=2), S, False, CLOSED),
        # neutral results (not the partner's doing) change nothing
        (Breaker(consecutive_failures=2), N, False, Breaker(consecutive_failures=2)),
        # open: stragglers from before the opening count, do not reopen; a success closes
        (OPEN_1, F, False, replace(OPEN_1, consecutive_failures=4)),
        (OPEN_1, S, False, CLOSED),
        # half-open: the probe decides; a failed probe reopens with a doubled cool-down
        (HALF_1, S, True, CLOSED),
        (HALF_1, F, True, Breaker(BreakerState.OPEN, 4, 2, NOW, at(60))),
        # a probe with no verdict (policy, a fault, a stop): OPEN, the next attempt probes
        (HALF_1, N, True, replace(HALF_1, state=BreakerState.OPEN, probe_until=None)),
        (HALF_1, F, False, replace(HALF_1, consecutive_failures=4)),
        (HALF_1, N, False, HALF_1),
        # a probe admitted but not sent yet (OPEN, its turn taken) decides the same way
        (replace(OPEN_1, probe_until=at(60)), S, True, CLOSED),
        (replace(OPEN_1, probe_until=at(60)), F, True,
         Breaker(BreakerState.OPEN, 4, 2, NOW, at(60))),
        (replace(OPEN_1, probe_until=at(60)), N, True, OPEN_1),
        # the cool-down doubles at each opening in a row, up to the cap
        (Breaker(BreakerState.HALF_OPEN, 9, 4, NOW, NOW, at(1)), F, True,
         Breaker(BreakerState.OPEN, 10, 5, NOW, at(480))),
        (Breaker(BreakerState.HALF_OPEN, 9, 6, NOW, NOW, at(1)), F, True,
         Breaker(BreakerState.OPEN, 10, 7, NOW, at(600))),
    ],
)
def test_breaker_table(before: Breaker, signal: Signal, probe: bool, after: Breaker) -> None:
    assert breaker_after(before, signal, NOW, CONFIG, no_jitter, probe=probe) == after


def test_a_probe_admitted_takes_the_turn_and_stays_open_until_sent() -> None:
    """HALF_OPEN is one probe in flight: an admitted probe's message may turn out final."""
    d = started(dest(breaker=replace(OPEN_1, next_probe_at=at(-1))), NOW, probe=True,
                probe_seconds=60)
    assert d.breaker == replace(OPEN_1, next_probe_at=at(-1), probe_until=at(60))
    assert d.last_attempt_at is None  # the attempt's result sets it: it may never be sent


def test_probe_start_turns_it_half_open_with_a_deadline() -> None:
    assert breaker_probe_started(OPEN_1, at(31), 90) == replace(
        OPEN_1, state=BreakerState.HALF_OPEN, probe_until=at(121))


@pytest.mark.parametrize(("openings", "low", "high"),
                         [(1, 24, 30), (2, 48, 60), (3, 96, 120), (6, 480, 600), (30, 480, 600)])
def test_cooldown_doubles_with_up_to_20_percent_jitter(openings: int, low: float,
                                                        high: float) -> None:
    assert cooldown_seconds(openings, CONFIG, lambda: 0.0) == high
    assert cooldown_seconds(openings, CONFIG, lambda: 1.0) == pytest.approx(low)


@pytest.mark.parametrize(
    ("current", "result", "started", "last_cut", "expected"),
    [
        # overload halves, never below 1
        (16.0, status(429), at(0), None, (8.0, at(10))),
        (16.0, status(503), at(0), None, (8.0, at(10))),
        (16.0, error(ErrorKind.TIMEOUT), at(0), None, (8.0, at(10))),
        (1.0, status(429), at(0), None, (1.0, at(10))),
        # one congestion event cuts once: attempts started before the last cut do not cut
        (8.0, status(429), at(1), at(5), (8.0, at(5))),
        (8.0, status(429), at(6), at(5), (4.0, at(10))),
        # success grows by one per window of `current` successes, up to the cap
        (8.0, status(200), at(0), at(5), (8.125, at(5))),
        (15.95, status(200), at(0), None, (16.0, None)),
        (16.0, status(200), at(0), None, (16.0, None)),
        # other failures leave it; a permanent answer came back, as fast as a success
        (8.0, status(500), at(0), None, (8.0, None)),
        (8.0, error(ErrorKind.CONNECTION), at(0), None, (8.0, None)),
        (8.0, status(404), at(0), None, (8.125, None)),
        # a lower cap applies at once
        (32.0, status(200), at(0), None, (16.0, None)),
    ],
)
def test_adaptive_concurrency(current: float, result: AttemptResult, started: datetime,
                              last_cut: datetime | None,
                              expected: tuple[float, datetime | None]) -> None:
    assert adapt_concurrency(current, 16, result, started, last_cut, at(10)) == expected


def dest(**changes: object) -> Destination:
    return replace(Destination(KEY), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("destination", "in_flight", "expected"),
    [
        (dest(), 0, (16, False, None, None)),
        (dest(), 10, (6, False, None, None)),
        (dest(), 16, (0, False, Blocked.AT_CAP, None)),
        (dest(settings=DestinationSettings(max_concurrency=2)), 1, (1, False, None, None)),
        (dest(concurrency=4.7), 1, (3, False, None, None)),
        (dest(settings=DestinationSettings(paused=True)), 0, (0, False, Blocked.PAUSED, None)),
        (dest(held_until=at(5)), 0, (0, False, Blocked.HELD, at(5))),
        (dest(held_until=at(-5)), 0, (16, False, None, None)),
        (dest(breaker=OPEN_1), 0, (0, False, Blocked.OPEN, at(30))),
        (dest(breaker=replace(OPEN_1, next_probe_at=at(-1))), 0, (1, True, None, None)),
        (dest(breaker=HALF_1), 0, (0, False, Blocked.OPEN, at(60))),
        (dest(breaker=replace(HALF_1, probe_until=None)), 0, (1, True, None, None)),
        # past the cool-down with the probe's turn taken by an attempt not sent yet
        (dest(breaker=replace(OPEN_1, next_probe_at=at(-1), probe_until=at(60))), 0,
         (0, False, Blocked.OPEN, at(60))),
        (dest(settings=DestinationSettings(rate_per_second=2)), 0, (1, False, None, None)),
        (dest(settings=DestinationSettings(rate_per_second=2), rate_next_at=at(0.5)), 0,
         (0, False, Blocked.RATE, at(0.5))),
    ],
)
def test_admission(destination: Destination, in_flight: int,
                   expected: tuple[int, bool, Blocked | None, datetime | None]) -> None:
    verdict = admission(destination, NOW, in_flight, 16)
    assert (verdict.slots, verdict.probe, verdict.blocked, verdict.ready_at) == expected


def test_rate_spaces_starts_by_one_over_the_rate() -> None:
    d = dest(settings=DestinationSettings(rate_per_second=4))
    d = started(d, NOW, probe=False, probe_seconds=60)
    assert d.rate_next_at == at(0.25)
    assert admission(d, at(0.1), 0, 16).blocked is Blocked.RATE
    d = started(d, at(0.3), probe=False, probe_seconds=60)
    assert d.rate_next_at == at(0.55)


@pytest.mark.parametrize("rate", [1e-12, 1e-300, 5e-324])
def test_a_rate_too_small_for_a_date_waits_a_century(rate: float) -> None:
    d = started(dest(settings=DestinationSettings(rate_per_second=rate)), NOW, probe=False,
                probe_seconds=60)
    assert d.rate_next_at == NOW + timedelta(days=100 * 365)
    d = started(d, NOW, probe=False, probe_seconds=60)  # from the last next start on
    assert d.rate_next_at == NOW + timedelta(days=200 * 365)


def test_a_new_rate_spaces_the_next_start_from_the_last_by_itself() -> None:
    d = started(dest(settings=DestinationSettings(rate_per_second=1e-12)), NOW, probe=False,
                probe_seconds=60)
    faster = d.with_settings(DestinationSettings(rate_per_second=10))
    assert faster.rate_next_at == NOW + timedelta(seconds=0.1)  # not a century on
    assert d.with_settings(DestinationSettings(rate_per_second=None)).rate_next_at is None
    assert d.with_settings(DestinationSettings(rate_per_second=1e-12, paused=True)
                           ).rate_next_at == d.rate_next_at  # the rate unchanged: kept
    never = dest(settings=DestinationSettings(rate_per_second=1))
    assert never.with_settings(DestinationSettings(rate_per_second=5)).rate_next_at is None


def test_last_attempt_at_is_the_latest_start_of_an_attempt_that_finished() -> None:
    rules = Rules(default_concurrency=16, breaker=CONFIG, retry_after_cap=60)
    d = finished(dest(), status(200), started_at=at(5), now=at(6), probe=False, rules=rules,
                 rand=no_jitter)
    assert d.last_attempt_at == at(5)
    d = finished(d, status(200), started_at=at(2), now=at(7), probe=False, rules=rules,
                 rand=no_jitter)  # a slower one started before
    assert d.last_attempt_at == at(5)


def test_finished_records_hold_breaker_and_statistics() -> None:
    rules = Rules(default_concurrency=16, breaker=CONFIG, retry_after_cap=60)
    d = finished(dest(), status(429, "120"), started_at=NOW, now=at(1), probe=False,
                 rules=rules, rand=no_jitter)
    assert d.held_until == at(61)  # capped
    assert d.concurrency == 8.0
    assert d.breaker.consecutive_failures == 1
    assert d.last_error == "HTTP 429"
    d = finished(d, status(200), started_at=at(70), now=at(71), probe=False, rules=rules,
                 rand=no_jitter)
    assert d.breaker == CLOSED
    assert d.last_success_at == at(71)
    assert d.held_until == at(61)  # a hold is not cut short by a success


def test_finished_keeps_what_a_result_does_not_change() -> None:
    """finished() builds its Destination field by field (replace() cost 6.5 us an
    attempt): a field added to Destination must be named there, or it is lost to its
    default at the next attempt's result."""
    assert [f.name for f in fields(Destination)] == [
        "key", "settings", "breaker", "concurrency", "last_decrease_at", "held_until",
        "rate_next_at", "last_attempt_at", "last_success_at", "last_error", "version"], (
        "a new Destination field: keep it in domain/destination.finished() too")
    rules = Rules(default_concurrency=16, breaker=CONFIG, retry_after_cap=60)
    before = dest(settings=DestinationSettings(paused=True, max_concurrency=4,
                                               rate_per_second=2.0),
                  rate_next_at=at(9), held_until=at(30), last_success_at=at(-5),
                  last_error="HTTP 503", version=7)
    after = finished(before, status(200), started_at=at(1), now=at(2), probe=False,
                     rules=rules, rand=no_jitter)
    assert (after.key, after.settings, after.rate_next_at, after.held_until, after.version,
            after.last_error) == (before.key, before.settings, at(9), at(30), 7, "HTTP 503")
    assert (after.last_success_at, after.last_attempt_at) == (at(2), at(1))
    plain = dest(last_attempt_at=at(1))
    assert started(plain, at(3), probe=False, probe_seconds=180.0) is plain  # nothing to copy
    assert started(before, at(3), probe=False, probe_seconds=180.0).rate_next_at == at(9.5)


def test_a_permanent_refusal_closes_the_breaker_but_is_no_success() -> None:
    """The partner is there (the breaker's rule), yet nothing was delivered: a 422 is
    the last error, not the last success."""
    rules = Rules(default_concurrency=16, breaker=CONFIG, retry_after_cap=60)
    d = finished(dest(), status(503), started_at=NOW, now=at(1), probe=False, rules=rules,
                 rand=no_jitter)
    assert d.breaker.consecutive_failures == 1
    d = finished(d, status(422), started_at=at(2), now=at(3), probe=False, rules=rules,
                 rand=no_jitter)
    assert d.breaker.consecutive_failures == 0  # a run of failures ended
    assert (d.last_success_at, d.last_error) == (None, "HTTP 422")
    d = finished(d, status(204), started_at=at(4), now=at(5), probe=False, rules=rules,
                 rand=no_jitter)
    assert (d.last_success_at, d.last_error) == (at(5), "HTTP 422")


@pytest.mark.parametrize(
    ("result", "held"),
    [(status(429, "10"), at(10)), (status(503, "10"), at(10)), (status(500, "10"), None),
     (status(429), None), (status(429, "0"), None), (status(429, "99999"), at(3600))],
)
def test_hold_until(result: AttemptResult, held: datetime | None) -> None:
    assert hold_until(result, NOW, 3600) == held


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://API.Partner.example/hook", "api.partner.example:443"),
        ("http://api.partner.example/hook", "api.partner.example:80"),
        ("https://api.partner.example:8443/x?y", "api.partner.example:8443"),
        ("http://127.0.0.1:9000/", "127.0.0.1:9000"),
        ("https://[2001:DB8::1]:8443/", "[2001:db8::1]:8443"),
        ("https://[2001:db8::1]/", "[2001:db8::1]:443"),
    ],
)
def test_default_destination(url: str, name: str) -> None:
    assert default_destination(url) == name
    assert is_valid_name(name)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 129, "é", "a#b"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


A, B, C = (DestinationKey("s", n) for n in "abc")


@pytest.mark.parametrize(
    ("ready", "limit", "shares"),
    [
        ([], 10, {}),
        ([(A, 32)], 64, {A: 32}),
        # a big backlog beside small ones: equal shares first, then the rest
        ([(A, 32), (B, 1), (C, 1)], 64, {A: 32, B: 1, C: 1}),
        ([(A, 32), (B, 32)], 10, {A: 5, B: 5}),
        ([(A, 32), (B, 32), (C, 32)], 4, {A: 2, B: 1, C: 1}),
        # more destinations than claims: the first in turn get one each
        ([(A, 5), (B, 5), (C, 5)], 2, {A: 1, B: 1}),
    ],
)
def test_fair_shares(ready: list[tuple[DestinationKey, int]], limit: int,
                     shares: dict[DestinationKey, int]) -> None:
    assert fair_shares(ready, limit) == shares
