"""What is kept of a partner's answer: enough to explain an outcome, bounded in size."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# the headers that explain an outcome (contract v1.1); everything else is left out
KEPT_HEADERS = ("content-type", "location", "retry-after")
BODY_LIMIT = 1024  # bytes of the body kept
HEADER_VALUE_LIMIT = 2048  # characters of one kept header value


def _text(value: str) -> str:
    """Valid text: header values may carry bytes decoded as surrogates, which no JSON
    encoder takes; they become U+FFFD like an invalid body byte."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class PartnerResponse:
    headers: tuple[tuple[str, str], ...]
    body: str
    body_truncated: bool

    @classmethod
    def capture(cls, headers: Iterable[tuple[str, str]], body_prefix: bytes,
                more: bool) -> PartnerResponse:
        """From the response's headers and the first bytes read of its body; `more`: the
        body went on beyond `body_prefix`. The body is cut at BODY_LIMIT bytes and decoded
        as UTF-8 with invalid or cut sequences replaced."""
        kept: dict[str, str] = {}
        for name, value in headers:
            lowered = name.lower()
            if lowered in KEPT_HEADERS and lowered not in kept:
                kept[lowered] = _text(value)[:HEADER_VALUE_LIMIT]
        return cls(
            headers=tuple((name, kept[name]) for name in KEPT_HEADERS if name in kept),
            body=body_prefix[:BODY_LIMIT].decode("utf-8", "replace"),
            body_truncated=more or len(body_prefix) > BODY_LIMIT,
        )
