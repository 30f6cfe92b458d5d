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
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidCursor() from None


def decode_position(cursor: str | None) -> int | None:
    """The integer position a store's cursor carries (None: from the start)."""
    if not cursor:
        return None
    position = decode_cursor(cursor)
    if (not isinstance(position, int) or isinstance(position, bool)
            or not 0 <= position < 2**63):  # SQLite's integers are 64-bit
        raise InvalidCursor()
    return position
