"""The body of POST /v1/messages as pydantic parses it: the wire form of a submission.

The rules are the domain's (domain/submission.py); here they are applied, and written into
the JSON schema that /openapi.json gives generated clients.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from notify_relay.domain.destination import NAME_PATTERN
from notify_relay.domain.message import Content
from notify_relay.domain.submission import (
    ID_ALPHABET,
    MAX_HEADERS,
    MAX_URL_LENGTH,
    METHODS,
    REFUSED_HEADERS,
    NewMessage,
    check_header_name,
    check_header_value,
    check_method,
    check_target_url,
    check_timestamp,
    encode_body,
    parse_rfc3339,
)


def json_integer(value: object) -> object:
    """JSON Schema's integer: 3 and 3.0, never "3" or true (strict mode refused 3.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# integers as JSON Schema counts them (3.0 too), strict otherwise, within bounds
MaxAttempts = Annotated[int, Field(ge=1, le=100), BeforeValidator(json_integer)]
Identifier = Annotated[str, StringConstraints(pattern=rf"^{ID_ALPHABET}+$", min_length=1)]
# what the schema tells generated clients about a target (the validator says the rest):
# http(s), a canonical dotted-quad IPv4 address or a name of at most 253 in labels of 1-63
# whose last is not numeric, a port of 1-65535, a path (with query and fragment) of the
# characters `format: uri` admits: with any visible ASCII there, schemathesis drew
# 2,048-character URLs until one happened to be a URI (~200 s of the suite). IPv6
# literals, underscores and a port's leading zeros are the validator's.
URI_CHAR = r"(?:[-A-Za-z0-9._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
TARGET_URL_PATTERN = (r"^[Hh][Tt][Tt][Pp][Ss]?://(?=[A-Za-z0-9.-]{1,253}(?:[:/]|$))"
                      rf"(?:(?:{_OCTET}\.){{3}}{_OCTET}"
                      r"|([A-Za-z0-9-]{1,63}\.)*[A-Za-z][A-Za-z0-9-]{0,62})"
                      r"(:(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}"
                      r"|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
                      rf"(/{URI_CHAR}*(#{URI_CHAR}*)?)?$")
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
            "additionalProperties": {"type": "string",
                                     "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$"}},
    )] = Field(default_factory=dict)
    # Any, not JsonValue: the strict JSON parser has already made it JSON values, and
    # JsonValue's validation refused a body nested 255 levels deep (a 400 naming a field
    # 4 KB long), and walked every value again (106-176 ms of the API's loop for 5 MB)
    body: Any = Field(default=None, description=(
        "a string, sent as its UTF-8 bytes; any other JSON value, sent as compact JSON; "
        "null or absent: no body"))
    timestamp: Annotated[str, Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN}),
                         AfterValidator(check_timestamp)] | None = None
    retryPolicy: RetryPolicyIn | None = None
    timeoutSeconds: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    destination: Annotated[str, StringConstraints(pattern=NAME_PATTERN)] | None = None
    deliverAt: Annotated[str, Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN}),
                         AfterValidator(check_timestamp)] | None = Field(
        default=None, description="no attempt before this time; a past time means now; "
                                  "at most the server's cap ahead (default 30 days)")
    callbackUrl: Annotated[
        str, Field(max_length=MAX_URL_LENGTH, json_schema_extra={
            "pattern": TARGET_URL_PATTERN, "format": "uri"}),
        AfterValidator(check_target_url),
    ] | None = Field(default=None, description="told the outcome when the message is "
                                               "DELIVERED or FAILED")

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
        """What the partner receives; ValidationFailed for a body that cannot be sent."""
        payload, kind = encode_body(self.body)
        return Content(
            target_url=self.targetUrl,
            method=self.method,
            headers=tuple(self.headers.items()),
            body=payload,
            body_kind=kind,
        )

    def event_time(self) -> datetime | None:
        return parse_rfc3339(self.timestamp) if self.timestamp else None

    def to_new_message(self) -> NewMessage:
        policy = self.retryPolicy
        return NewMessage(
            message_id=self.messageId,
            content=self.content(),
            destination=self.destination,
            event_time=self.event_time(),
            max_attempts=policy.maxAttempts if policy else None,
            initial_delay=policy.initialDelaySeconds if policy else None,
            max_delay=policy.maxDelaySeconds if policy else None,
            timeout_seconds=self.timeoutSeconds,
            deliver_at=parse_rfc3339(self.deliverAt).astimezone(UTC) if self.deliverAt else None,
            callback_url=self.callbackUrl,
        )
