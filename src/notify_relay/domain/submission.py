"""The submission a sender posts, with every rule of the contract.

pydantic does the parsing (it is pure, and the same model documents the API); the rules
that pydantic has no word for are plain functions below, so they read as the contract does.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from notify_relay.domain.destination import NAME_PATTERN
from notify_relay.domain.errors import FieldError, ValidationFailed
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
# RFC 9110 field values: visible ASCII, space and tab (obs-text is not sent on)
_BAD_VALUE_CHARS = re.compile(r"[^\t\x20-\x7e]")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
# RFC 3339 date-time (section 5.6): the form fromisoformat alone is too lenient for
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
# a host whose last label is a number is read as an IPv4 address by URL parsers (WHATWG)
_NUMERIC_LAST_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_CANONICAL_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
                             r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])")


def check_host(host: str, bracketed: bool) -> None:
    """A DNS name, a canonical dotted-quad IPv4 address or a bracketed IPv6 address."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError("has an invalid IPv6 address") from None
        return
    if not host.isascii():
        raise ValueError("host must be ASCII: write an internationalized name in its IDNA "
                         "form (xn--...)")
    name = host.removesuffix(".")  # example.com. is a fully qualified name
    if _NUMERIC_LAST_LABEL.fullmatch(name.rsplit(".", 1)[-1]) and (
            name != host or not _CANONICAL_IPV4.fullmatch(host)):
        raise ValueError("a numeric host must be a dotted-quad IPv4 address in canonical "
                         "form (like 192.0.2.1)")


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
    if not url.isascii():
        try:
            url.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
    check_host(parts.hostname, bracketed="[" in parts.netloc)
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
        raise ValueError("header value must be visible ASCII, spaces and tabs (RFC 9110): "
                         "no CR, LF, NUL or other control characters")
    return value


def parse_rfc3339(value: str) -> datetime:
    """The time, or ValueError: only RFC 3339, and only what converts to UTC."""
    if not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone "
                         "(2026-11-28T23:59:59.123Z)")
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("must be a valid RFC 3339 date-time within years 1-9999 in UTC"
                         ) from None
    return parsed


def check_timestamp(value: str) -> str:
    parse_rfc3339(value)
    return value


def json_integer(value: object) -> object:
    """JSON Schema's integer: 3 and 3.0, never "3" or true (strict mode refused 3.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# integers as JSON Schema counts them (3.0 too), strict otherwise, within bounds
MaxAttempts = Annotated[int, Field(ge=1, le=100), BeforeValidator(json_integer)]
Identifier = Annotated[str, StringConstraints(pattern=rf"^{ID_ALPHABET}+$", min_length=1)]
# what the schema tells generated clients about a target (the validator says the rest):
# http(s), a name whose last label is not numeric, a port, a path of visible ASCII
TARGET_URL_PATTERN = (r"^[Hh][Tt][Tt][Pp][Ss]?://([A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*"
                      r"(:[1-9][0-9]{0,3})?(/[!-~]*)?$")
HEADER_NAME_PATTERN = "^(?!(?:" + "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in name)
    for name in sorted(REFUSED_HEADERS)) + ")$)(?![Pp][Rr][Oo][Xx][Yy]-)" + \
    r"[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
METHOD_PATTERN = "^(?:" + "|".join(
    "".join(f"[{c}{c.lower()}]" for c in method) for method in sorted(METHODS)) + ")$"
TIMESTAMP_PATTERN = (r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3])"
                     r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|\+00:00)$")
HeaderName = Annotated[str, AfterValidator(check_header_name)]
HeaderValue = Annotated[str, AfterValidator(check_header_value)]


class RetryPolicyIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    maxAttempts: MaxAttempts | None = None
    initialDelaySeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # below initialDelaySeconds, it caps that too (RetryLimits.effective_policy): a rule
    # across two fields would be one that no schema can tell a client
    maxDelaySeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class Submission(BaseModel):
    """Body of POST /v1/messages."""

    model_config = ConfigDict(strict=True, extra="forbid")

    messageId: Annotated[Identifier, Field(max_length=128)]
    senderId: Annotated[Identifier, Field(max_length=64)] | None = None
    targetUrl: Annotated[
        str, Field(max_length=MAX_URL_LENGTH, json_schema_extra={
            "pattern": TARGET_URL_PATTERN, "format": "uri"}),
        AfterValidator(check_target_url),
    ]
    method: Annotated[str, Field(json_schema_extra={"pattern": METHOD_PATTERN}),
                      AfterValidator(check_method)] = "POST"
    headers: Annotated[dict[HeaderName, HeaderValue], Field(
        max_length=MAX_HEADERS, json_schema_extra={
            "propertyNames": {"pattern": HEADER_NAME_PATTERN},
            "additionalProperties": {"type": "string", "pattern": r"^[\t\x20-\x7e]*$"}},
    )] = Field(default_factory=dict)
    body: JsonValue = None
    timestamp: Annotated[str, Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN}),
                         AfterValidator(check_timestamp)] | None = None
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
        """What the partner receives; raises ValidationFailed for a body that cannot be
        sent as it is (lone surrogates, NaN or infinite numbers: not UTF-8, not JSON)."""
        body = self.body
        try:
            if body is None:
                payload, kind = None, BodyKind.NONE
            elif isinstance(body, str):
                payload, kind = body.encode(), BodyKind.TEXT
            else:
                payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                                     allow_nan=False).encode()
                kind = BodyKind.JSON
        except UnicodeEncodeError:
            raise ValidationFailed([FieldError("body", "must be valid Unicode (no lone "
                                                       "surrogates)")]) from None
        except ValueError:
            raise ValidationFailed([FieldError("body", "NaN and infinite numbers are not "
                                                       "JSON")]) from None
        return Content(
            target_url=self.targetUrl,
            method=self.method,
            headers=tuple(self.headers.items()),
            body=payload,
            body_kind=kind,
        )

    def event_time(self) -> datetime | None:
        return parse_rfc3339(self.timestamp) if self.timestamp else None
