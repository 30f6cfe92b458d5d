"""Who is calling: API keys (embedded) or IAM principals (API Gateway) -> senders.

API keys are kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from notify_relay.domain.errors import Forbidden, Unauthenticated

DEFAULT_SENDER = "default"
_ASSUMED_ROLE = re.compile(r"arn:(aws[\w-]*):sts::(\d+):assumed-role/([^/]+)/.*")


def principal_of(scope: Mapping[str, Any]) -> str | None:
    """The IAM principal API Gateway authenticated, from the event Mangum passes along: a
    REST API's (payload 1.0, requestContext.identity) or an HTTP API's (payload 2.0,
    requestContext.authorizer.iam).

    An assumed-role session is reported as its role, so configuration names roles.
    """
    event = scope.get("aws.event") or {}
    context = event.get("requestContext") or {}
    if event.get("version") == "2.0":
        identity = (context.get("authorizer") or {}).get("iam") or {}
    else:
        identity = context.get("identity") or {}
    arn = identity.get("userArn")
    if not isinstance(arn, str):
        return None
    match = _ASSUMED_ROLE.fullmatch(arn)
    return f"arn:{match[1]}:iam::{match[2]}:role/{match[3]}" if match else arn


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True, slots=True)
class Authenticator:
    _senders: Mapping[bytes, str] = field(default_factory=dict)
    principals: Mapping[str, str] | None = None

    @classmethod
    def from_keys(cls, keys: Mapping[str, str]) -> Authenticator:
        """`keys` maps each API key to its sender."""
        return cls({_digest(key): sender for key, sender in keys.items()})

    @classmethod
    def from_principals(cls, principals: Mapping[str, str]) -> Authenticator:
        """`principals` maps each IAM principal ARN (a role for assumed roles) to a sender."""
        return cls(principals=dict(principals))

    @property
    def enabled(self) -> bool:
        return bool(self._senders) or self.principals is not None

    def sender_of(self, scope: Mapping[str, Any], authorization: str | None,
                  claimed: str | None) -> str:
        if self.principals is None:
            return self.sender_for(authorization, claimed)
        principal = principal_of(scope)
        sender = self.principals.get(principal) if principal else None
        if sender is None:
            raise Forbidden("this IAM principal is not mapped to a sender")
        if claimed is not None and claimed != sender:
            raise Forbidden(f"senderId {claimed} is not the sender of this IAM principal")
        return sender

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
