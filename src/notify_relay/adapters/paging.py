"""Opaque list cursors shared by the store adapters."""

from __future__ import annotations

import base64
import binascii
import json

from notify_relay.domain.errors import InvalidCursor


def encode_cursor(position: object) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> object:
    """A position this server issued; InvalidCursor for anything else. Strings in it are
    checked to be Unicode that UTF-8 can carry: JSON's `\\ud800` escape decodes to a lone
    surrogate, which the stores' drivers refuse with an error of their own (a 500)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        json.dumps(position, ensure_ascii=False).encode()
    except (binascii.Error, ValueError, UnicodeError, RecursionError):
        raise InvalidCursor() from None
    return position


def decode_position(cursor: str | None) -> int | None:
    """The integer position a store's cursor carries (None: from the start)."""
    if not cursor:
        return None
    position = decode_cursor(cursor)
    if (not isinstance(position, int) or isinstance(position, bool)
            or not 0 <= position < 2**63):  # SQLite's integers are 64-bit
        raise InvalidCursor()
    return position
