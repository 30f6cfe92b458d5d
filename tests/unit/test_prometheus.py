"""The observer's counts, each under its own labels (its labelled children are looked up
once and kept)."""

from __future__ import annotations

from notify_relay.adapters.prometheus import PrometheusObserver


def test_each_count_goes_to_its_own_labels() -> None:
    observer = PrometheusObserver()
    for outcome in ("SUCCESS", "SUCCESS", "SUCCESS", "RETRY"):
        observer.attempt(outcome, 0.01)
    for reason in ("PAUSED", "RATE", "PAUSED"):
        observer.held(reason)
    observer.submission("accepted")
    for code in ("400", "429", "400"):
        observer.submission("rejected", code)
    text = observer.render(0).decode()
    for line in ('notify_relay_attempts_total{outcome="SUCCESS"} 3.0',
                 'notify_relay_attempts_total{outcome="RETRY"} 1.0',
                 'notify_relay_attempts_held_total{reason="PAUSED"} 2.0',
                 'notify_relay_attempts_held_total{reason="RATE"} 1.0',
                 'notify_relay_submissions_total{code="",result="accepted"} 1.0',
                 'notify_relay_submissions_total{code="400",result="rejected"} 2.0',
                 'notify_relay_submissions_total{code="429",result="rejected"} 1.0',
                 "notify_relay_attempt_duration_seconds_count 4.0"):
        assert line in text.splitlines(), (line, text)


def test_two_observers_count_apart() -> None:
    """Each has registries of its own: no child is shared between them."""
    first, second = PrometheusObserver(), PrometheusObserver()
    first.attempt("SUCCESS", 0.01)
    second.held("OPEN")
    assert 'notify_relay_attempts_total{outcome="SUCCESS"}' not in second.render(0).decode()
    assert 'notify_relay_attempts_held_total{reason="OPEN"}' not in first.render(0).decode()
