"""API keys -> senders; keys are kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from notify_relay.domain.errors import Forbidden, Unauthenticated

DEFAULT_SENDER = "default"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class Authenticator:
    _senders: Mapping[bytes, str] = field(default_factory=dict)

    @classmethod
    def from_keys(cls, keys: Mapping[str, str]) -> Authenticator:
        """`keys` maps each API key to its sender."""
        return cls({_digest(key): sender for key, sender in keys.items()})

    @property
    def enabled(self) -> bool:
        return bool(self._senders)

    def sender_for(self, authorization: str | None, claimed: str | None) -> str:
        """The caller's sender: from its key when keys are configured, else as claimed."""
        if not self._senders:
            return claimed or DEFAULT_SENDER
        scheme, _, key = (authorization or "").partition(" ")
        sender = self._senders.get(_digest(key.strip())) if scheme.lower() == "bearer" else None
        if sender is None:
            raise Unauthenticated("a valid API key is required (Authorization: Bearer <key>)")
        if claimed is not None and claimed != sender:
            raise Forbidden(f"senderId {claimed} is not the sender of this API key")
        return sender
