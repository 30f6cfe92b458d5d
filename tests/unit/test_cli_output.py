"""The CLI's tables, blocks and error lines."""

from __future__ import annotations

import pytest

from notify_relay.cli.http_client import ApiError
from notify_relay.cli.messages import MESSAGE_COLUMNS, message_row, response_block
from notify_relay.cli.output import clean, duration_ms, error_line, fields, table, truncate


def test_a_table_aligns_its_columns_under_capital_headers() -> None:
    text = table(("id", "status", "last error"),
                 [("m-1", "DELIVERED", None), ("a-much-longer-id", "FAILED", "HTTP 400")])
    assert text.splitlines() == [
        "ID                STATUS     LAST ERROR",
        "m-1               DELIVERED  -",
        "a-much-longer-id  FAILED     HTTP 400",
    ]


def test_a_table_of_message_views_shows_times_as_given() -> None:
    view = {"messageId": "m-1", "status": "RETRYING", "attemptCount": 2,
            "destination": "api.partner.com:443", "updatedAt": "2026-11-28T23:59:59.123Z",
            "lastError": "HTTP 503"}
    lines = table(MESSAGE_COLUMNS, [message_row(view)]).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ATTEMPTS", "DESTINATION", "UPDATED", "LAST",
                                "ERROR"]
    assert lines[1].split() == ["m-1", "RETRYING", "2", "api.partner.com:443",
                                "2026-11-28T23:59:59.123Z", "HTTP", "503"]


def test_cells_stay_on_one_line_and_cannot_drive_the_terminal() -> None:
    text = table(("id", "error"), [("m-1", "line one\nline two\x1b[31m red")])
    assert text.splitlines()[1] == "m-1  line one\\nline two\\x1b[31m red"


def test_long_cells_are_cut_with_an_ellipsis() -> None:
    assert truncate("x" * 100, 10) == "x" * 9 + "…"
    assert truncate("short", 10) == "short"
    row = table(("id", "error"), [("m", "e" * 200)], max_width=20).splitlines()[1]
    assert row == "m   " + "e" * 19 + "…"


def test_wide_characters_count_two_columns() -> None:
    lines = table(("name", "n"), [("日本", 1), ("abcd", 2)]).splitlines()
    assert lines[1] == "日本  1"
    assert lines[2] == "abcd  2"


def test_values_are_shown_plainly() -> None:
    assert clean(None) == "-"
    assert clean(True) == "yes"
    assert clean(False) == "no"
    assert clean(0) == "0"
    assert clean("a\u202eb") == "a\\u202eb"
    assert clean("a\nb\tc", keep_lines=True) == "a\nb\tc"
    assert duration_ms(12) == "12 ms"
    assert duration_ms(30001) == "30.00 s"
    assert duration_ms(None) == "-"


def test_fields_align_their_values() -> None:
    assert fields([("id", "m-1"), ("last error", None)]).splitlines() == [
        "id:         m-1",
        "last error: -",
    ]


@pytest.mark.parametrize(("error", "line"), [
    (ApiError(404, "NOT_FOUND", "no message m-1", "cid-1"),
     "notify-relay: error: NOT_FOUND: no message m-1 (correlation id cid-1)"),
    (ApiError(None, "UNREACHABLE", "cannot reach http://127.0.0.1:1: refused"),
     "notify-relay: error: UNREACHABLE: cannot reach http://127.0.0.1:1: refused"),
    (ApiError(400, "VALIDATION_ERROR", "a\nb", None),
     "notify-relay: error: VALIDATION_ERROR: a\\nb"),
])
def test_an_error_is_one_line(error: ApiError, line: str) -> None:
    assert error_line(error) == line


def test_the_partners_answer_is_shown_with_its_headers_and_body() -> None:
    attempt = {"number": 1, "statusCode": 400,
               "response": {"headers": {"content-type": "application/json"},
                            "body": '{"error": "bad"}\nsecond line\x07', "bodyTruncated": True}}
    assert response_block(attempt) == "\n".join([
        "attempt 1: 400 (content-type: application/json)",
        '  | {"error": "bad"}',
        "  | second line\\x07",
        "  | … (cut after the first 1,024 bytes)",
    ])
    assert response_block({"number": 2, "response": None}) is None
    assert response_block({"number": 3}) is None
