"""Observer that feeds Prometheus metrics, on a registry of its own (no global state)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800,
                    3600, 4 * 3600, 12 * 3600)


class DestinationCounts(Protocol):
    def count_by_state(self) -> Mapping[str, int]: ...

    def count_blocked(self) -> Mapping[str, int]: ...


class PrometheusObserver:
    def __init__(self, *, submissions: bool = True) -> None:
        """`submissions`: whether this process counts submissions and shows them; in a
        two-process `serve` the API process does, and adds them to the delivery process's
        metrics (render_submissions)."""
        self._show_submissions = submissions
        self._submission_registry = CollectorRegistry()
        self.registry = CollectorRegistry()
        self._submissions = Counter(
            "notify_relay_submissions",
            "Submissions by result (accepted, duplicate, rejected) and, if rejected, HTTP status",
            ["result", "code"], registry=self._submission_registry)
        self._attempts = Counter(
            "notify_relay_attempts", "Delivery attempts by outcome", ["outcome"],
            registry=self.registry)
        self._attempt_seconds = Histogram(
            "notify_relay_attempt_duration_seconds", "Duration of one delivery attempt",
            registry=self.registry)
        self._deliveries = Counter(
            "notify_relay_deliveries", "Messages delivered (2xx)", registry=self.registry)
        self._dead_letters = Counter(
            "notify_relay_dead_letters", "Messages dead-lettered (FAILED)", registry=self.registry)
        self._latency = Histogram(
            "notify_relay_delivery_latency_seconds", "From acceptance to delivery",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._first_attempt = Histogram(
            "notify_relay_first_attempt_delay_seconds",
            "From when a message is due (accepted, or its deliverAt) to its first attempt",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._depth = Gauge(
            "notify_relay_queue_depth", "Entries in the work queue, leased ones included",
            registry=self.registry)
        self._transitions = Counter(
            "notify_relay_breaker_transitions", "Circuit breaker transitions of destinations",
            ["from_state", "to_state"], registry=self.registry)
        self._held = Counter(
            "notify_relay_attempts_held",
            "Attempts a destination held back (paused, open, held by Retry-After, at its "
            "cap, rate limited), without spending an attempt", ["reason"],
            registry=self.registry)
        self._by_state = Gauge(
            "notify_relay_destinations", "Destinations known to the worker, by breaker state",
            ["state"], registry=self.registry)
        self._quarantined = Counter(
            "notify_relay_quarantined",
            "Queue entries set aside because their message cannot be read",
            registry=self.registry)
        self._blocked = Gauge(
            "notify_relay_destinations_blocked",
            "Destinations that cannot start an attempt now, by reason", ["reason"],
            registry=self.registry)
        self._source: DestinationCounts | None = None
        # a labelled child looked up once: labels() checks and locks at every call, 1.3 us
        # of an attempt's and a submission's count (the label values are a few fixed ones)
        self._submissions_of = functools.cache(self._submissions.labels)
        self._attempts_of = functools.cache(self._attempts.labels)
        self._held_of = functools.cache(self._held.labels)

    def submission(self, result: str, code: str | None = None) -> None:
        self._submissions_of(result, code or "").inc()

    def attempt(self, outcome: str, duration_seconds: float) -> None:
        self._attempts_of(outcome).inc()
        self._attempt_seconds.observe(duration_seconds)

    def delivered(self, latency_seconds: float) -> None:
        self._deliveries.inc()
        self._latency.observe(latency_seconds)

    def first_attempt(self, delay_seconds: float) -> None:
        self._first_attempt.observe(delay_seconds)

    def dead_lettered(self) -> None:
        self._dead_letters.inc()

    def breaker_transition(self, old: str, new: str) -> None:
        self._transitions.labels(old, new).inc()

    def held(self, reason: str) -> None:
        self._held_of(reason).inc()

    def quarantined(self) -> None:
        self._quarantined.inc()

    def watch_destinations(self, source: DestinationCounts) -> None:
        self._source = source

    def render(self, queue_depth: int) -> bytes:
        self._depth.set(queue_depth)
        if self._source is not None:
            states = self._source.count_by_state()
            for state in ("CLOSED", "OPEN", "HALF_OPEN"):
                self._by_state.labels(state).set(states.get(state, 0))
            blocked = self._source.count_blocked()
            for reason in ("PAUSED", "OPEN", "HELD", "AT_CAP", "RATE"):
                self._blocked.labels(reason).set(blocked.get(reason, 0))
        rest = generate_latest(self.registry)
        return self.render_submissions() + rest if self._show_submissions else rest

    def render_submissions(self) -> bytes:
        return generate_latest(self._submission_registry)
