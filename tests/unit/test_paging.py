"""Cursors: whatever a caller sends as one is either a position this server issued or a
ValueError (a 400), never another error (a 500)."""

from __future__ import annotations

import base64
import json

import pytest

from notify_relay.adapters.paging import decode_cursor, decode_position, encode_cursor


def forged(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", [0, 1, 12345, 2**63 - 1])
def test_positions_round_trip(position: int) -> None:
    assert decode_position(encode_cursor(position)) == position


@pytest.mark.parametrize(
    "cursor",
    [
        forged(2**64),  # beyond 64 bits: SQLite raised OverflowError, a 500
        forged(2**63),
        forged(-1),
        forged(True),
        forged("7"),
        forged(1.5),
        forged([1]),
        "not base64 !",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        forged("[" * 10) .replace("=", ""),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # nesting beyond the recursion limit
    ],
)
def test_forged_cursors_are_value_errors(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        decode_position(cursor)


@pytest.mark.parametrize("position", ["\ud800", {"name": {"S": "a\udfff"}}, ["\udc00"]])
def test_forged_cursors_with_lone_surrogates_are_value_errors(position: object) -> None:
    """JSON escapes them; UTF-8 cannot carry them: SQLite's driver raised its own error."""
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor(forged(position))


def test_any_json_value_round_trips_as_a_store_position() -> None:
    key = {"sender": {"S": "s"}, "sortKey": {"S": "2026-11-28#m"}}
    assert decode_cursor(encode_cursor(key)) == key
