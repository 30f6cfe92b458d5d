"""Credential redaction for everything a message shows or logs."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[REDACTED]"
_EXACT = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_PARTS = ("token", "secret", "key", "password", "signature")


def is_credential(name: str) -> bool:
    lowered = name.lower()
    return lowered in _EXACT or any(part in lowered for part in _PARTS)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name: REDACTED if is_credential(name) else value for name, value in headers}
