"""What the CLI prints: aligned tables and `name: value` blocks for people, JSON for scripts.

Text that comes from the server (a partner's answer, an error) is shown with its control
characters escaped, so that it can neither break a table's lines nor drive the terminal.
Times are shown as the server gives them.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from notify_relay.cli.http_client import ApiError, pages

EMPTY = "-"
ELLIPSIS = "…"
# C0 and C1 controls, DEL, and the bidi overrides that could reorder what is shown
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_KEEPING_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}"
                                                       if ord(char) < 0x100
                                                       else f"\\u{ord(char):04x}")


def clean(value: object, *, keep_lines: bool = False) -> str:
    """`value` as one printable line (or lines, with `keep_lines`); None is `-`."""
    if value is None:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if keep_lines:
        return _CONTROL_KEEPING_LINES.sub(_escape, text.replace("\r\n", "\n"))
    return _CONTROL.sub(_escape, text)


def width(text: str) -> int:
    """Columns `text` takes on a terminal: wide (East Asian) characters take two."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def truncate(text: str, limit: int) -> str:
    if width(text) <= limit:
        return text
    out, used = [], 0
    for char in text:
        w = width(char)
        if used + w > limit - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + ELLIPSIS


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
          max_width: int = 60) -> str:
    """Columns aligned on the widest cell, two spaces apart, headers in capitals (as `gh`).

    Each cell is one line, at most `max_width` columns; the last column is not padded.
    """
    cells = [[truncate(clean(c), max_width) for c in row] for row in rows]
    lines = [[h.upper() for h in headers], *cells]
    widths = [max(width(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for line in lines:
        padded = [c + " " * (widths[i] - width(c)) for i, c in enumerate(line[:-1])]
        out.append("  ".join([*padded, line[-1]]).rstrip())
    return "\n".join(out)


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """`name:  value` lines, values aligned."""
    if not pairs:
        return ""
    label = max(width(name) for name, _ in pairs) + 2
    return "\n".join(f"{name + ':':<{label}}{clean(value)}".rstrip() for name, value in pairs)


def indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.split("\n"))


def print_json(value: Any, out: TextIO | None = None) -> None:
    """The API's JSON as it came, indented; non-ASCII kept (it is valid JSON either way)."""
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


def error_line(error: ApiError) -> str:
    """`notify-relay: error: CODE: detail (correlation id ...)`, one line."""
    line = f"notify-relay: error: {clean(error.code)}: {clean(error.detail)}"
    if error.correlation_id:
        line += f" (correlation id {clean(error.correlation_id)})"
    return line


def duration_ms(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return EMPTY
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:g} ms"


__all__ = ["clean", "duration_ms", "error_line", "fields", "indent", "print_json", "table",
           "truncate", "width"]


def print_list(fetch: Callable[..., dict[str, Any]], args: dict[str, Any], *, noun: str,
               columns: Sequence[str], row: Callable[[dict[str, Any]], Sequence[object]],
               **filters: Any) -> None:
    """A list command's output: its pages followed to --limit (or --all), as a table, or
    as the API's JSON with the last nextCursor; what remains is said on stderr."""
    limit = None if args["all"] else args["limit"]
    items: list[dict[str, Any]] = []
    next_cursor = None
    for page in pages(fetch, limit=limit, cursor=args["cursor"], **filters):
        items.extend(page["items"])
        next_cursor = page.get("nextCursor")
    if args["json"]:
        print_json({"items": items, "nextCursor": next_cursor})
        return
    if items:
        print(table(columns, [row(item) for item in items]))
    else:
        print(f"no {noun}", file=sys.stderr)
    if next_cursor is not None:
        print(f"more {noun}: --all, --limit, or --cursor {next_cursor}", file=sys.stderr)
