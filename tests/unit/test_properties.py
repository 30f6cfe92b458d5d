"""Properties over generated input (hypothesis): whatever arrives is either accepted and
safe to store, read and send, or refused as a caller's error; never a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from notify_relay.adapters.paging import decode_position, encode_cursor
from notify_relay.api.submission import Submission
from notify_relay.api.views import rfc3339
from notify_relay.domain.errors import InvalidCursor, ValidationFailed
from notify_relay.domain.retry import parse_retry_after

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400)
@given(fields=st.dictionaries(
    st.sampled_from(["messageId", "senderId", "targetUrl", "method", "headers", "body",
                     "timestamp", "retryPolicy", "timeoutSeconds", "destination", "other"]),
    json_values | st.text(), max_size=8))
def test_any_body_is_a_submission_or_a_validation_error(fields: dict[str, object]) -> None:
    try:
        submission = Submission.model_validate(fields)
    except ValidationError:
        return
    try:
        content = submission.content()
    except ValidationFailed:
        return
    if content.body is not None:
        content.body.decode()  # what is sent is UTF-8
    submission.event_time()
    content.fingerprint()


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5)),
                                               timezone(timedelta(hours=-11, minutes=-30))])))
def test_accepted_timestamps_always_render_in_utc(moment: datetime) -> None:
    text = moment.isoformat()
    if moment.microsecond == 0:
        text = moment.isoformat(timespec="seconds")
    try:
        parsed = Submission.model_validate(
            {"messageId": "m", "targetUrl": "https://p.example/", "timestamp": text}
        ).event_time()
    except ValidationError:
        return  # beyond year 1-9999 once in UTC: refused, never stored
    rendered = rfc3339(parsed)
    assert rendered is not None
    assert rendered.endswith("Z")
    assert timedelta(0) <= parsed - datetime.fromisoformat(rendered) < timedelta(milliseconds=1)


@given(st.text(max_size=600))
def test_any_cursor_is_a_position_or_invalid(cursor: str) -> None:
    try:
        position = decode_position(cursor)
    except InvalidCursor:
        return
    assert position is None or 0 <= position < 2**63


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_issued_cursors_round_trip(position: int) -> None:
    assert decode_position(encode_cursor(position)) == position


@given(st.text(max_size=60) | st.integers(min_value=-10**6, max_value=10**30).map(str))
def test_retry_after_is_a_delay_or_none(value: str) -> None:
    delay = parse_retry_after(value, NOW)
    assert delay is None or delay >= 0
