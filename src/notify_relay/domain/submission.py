"""The submission a sender posts, with every rule of the contract.

pydantic does the parsing (it is pure, and the same model documents the API); the rules
that pydantic has no word for are plain functions below, so they read as the contract does.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)

from notify_relay.domain.destination import NAME_PATTERN
from notify_relay.domain.message import BodyKind, Content

ID_ALPHABET = r"[A-Za-z0-9._:@-]"
MAX_URL_LENGTH = 2048
MAX_HEADERS = 64
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
REFUSED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer",
     "keep-alive"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")


def check_target_url(url: str) -> str:
    if _URL_FORBIDDEN.search(url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user:password part")
    if port == 0:
        raise ValueError("port must be 1-65535")
    return url


def check_method(method: str) -> str:
    upper = method.upper()
    if upper not in METHODS:
        raise ValueError(f"must be one of {', '.join(sorted(METHODS))}")
    return upper


def check_header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError("header name must be an RFC 9110 token")
    lowered = name.lower()
    if lowered in REFUSED_HEADERS or lowered.startswith("proxy-"):
        raise ValueError(f"header {name} is set by the transport and may not be given")
    return name


def check_header_value(value: str) -> str:
    if _BAD_VALUE_CHARS.search(value):
        raise ValueError("header value must not contain CR, LF or NUL")
    return value


def check_timestamp(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an RFC 3339 date-time") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise ValueError("must be an RFC 3339 date-time with a time zone")
    return value


Identifier = Annotated[str, StringConstraints(pattern=rf"^{ID_ALPHABET}+$", min_length=1)]
HeaderName = Annotated[str, AfterValidator(check_header_name)]
HeaderValue = Annotated[str, AfterValidator(check_header_value)]


class RetryPolicyIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    maxAttempts: int | None = Field(default=None, ge=1, le=100)
    initialDelaySeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    maxDelaySeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetryPolicyIn:
        if (
            self.initialDelaySeconds is not None
            and self.maxDelaySeconds is not None
            and self.maxDelaySeconds < self.initialDelaySeconds
        ):
            raise ValueError("maxDelaySeconds must not be below initialDelaySeconds")
        return self


class Submission(BaseModel):
    """Body of POST /v1/messages."""

    model_config = ConfigDict(strict=True, extra="forbid")

    messageId: Annotated[Identifier, Field(max_length=128)]
    senderId: Annotated[Identifier, Field(max_length=64)] | None = None
    targetUrl: Annotated[
        str, Field(max_length=MAX_URL_LENGTH), AfterValidator(check_target_url)
    ]
    method: Annotated[str, AfterValidator(check_method)] = "POST"
    headers: Annotated[dict[HeaderName, HeaderValue], Field(max_length=MAX_HEADERS)] = Field(
        default_factory=dict
    )
    body: JsonValue = None
    timestamp: Annotated[str, AfterValidator(check_timestamp)] | None = None
    retryPolicy: RetryPolicyIn | None = None
    timeoutSeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    destination: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] | None = None

    @field_validator("headers")
    @classmethod
    def _header_names_unique(cls, headers: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name in headers:
            if name.lower() in seen:
                raise ValueError(f"{name} is given twice (header names are case-insensitive)")
            seen.add(name.lower())
        return headers

    def content(self) -> Content:
        body = self.body
        if body is None:
            payload, kind = None, BodyKind.NONE
        elif isinstance(body, str):
            payload, kind = body.encode(), BodyKind.TEXT
        else:
            payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            kind = BodyKind.JSON
        return Content(
            target_url=self.targetUrl,
            method=self.method,
            headers=tuple(self.headers.items()),
            body=payload,
            body_kind=kind,
        )

    def event_time(self) -> datetime | None:
        return datetime.fromisoformat(self.timestamp) if self.timestamp else None
