"""The rules of a submission, as the contract states them, and what the Relay is given.

Plain functions, so that they read as the contract does; the API's request model
(api/submission.py) applies them and documents them in /openapi.json.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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
# field values (RFC 9110): no control character but tab. The contract names CR, LF and
# NUL; the others cannot be sent either (aiohttp refuses them as header injection). Other
# characters go as UTF-8 (obs-text), so a lone surrogate, which has none, is refused too
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_URL_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_BRACKETED = re.compile(r"\[[^\[\]]*\](?::[0-9]*)?")
# RFC 3339 date-time (section 5.6): the form fromisoformat alone is too lenient for
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
# a host whose last label is a number is read as an IPv4 address by URL parsers (WHATWG)
_NUMERIC_LAST_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
# a DNS host name as resolvers take it: letters, digits, hyphens, and underscores as
# found in practice (_dmarc, srv_1); labels of 1-63, at most 253 without the root's dot
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
MAX_HOST_LENGTH = 253
_CANONICAL_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
                             r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])")


def check_host(host: str, bracketed: bool) -> None:
    """A DNS name, a canonical dotted-quad IPv4 address or a bracketed IPv6 address:
    a host that could never be reached is refused here, not retried for days, and the
    target's default destination (`host:port`) is then a name GET and PATCH take."""
    if bracketed:
        address, zoned, _ = host.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError("has an invalid IPv6 address") from None
        if zoned:  # a zone names an interface of one machine, and % no destination has
            raise ValueError("IPv6 address must have no zone (%...)")
        return
    if not host.isascii():
        raise ValueError("host must be ASCII: write an internationalized name in its IDNA "
                         "form (xn--...)")
    name = host.removesuffix(".")  # example.com. is a fully qualified name
    if _NUMERIC_LAST_LABEL.fullmatch(name.rsplit(".", 1)[-1]) and (
            name != host or not _CANONICAL_IPV4.fullmatch(host)):
        raise ValueError("a numeric host must be a dotted-quad IPv4 address in canonical "
                         "form (like 192.0.2.1)")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("host must be a DNS name: letters, digits, hyphens and underscores "
                         "in dot-separated labels of 1-63 (no percent-encoding)")
    if len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"host must be at most {MAX_HOST_LENGTH} characters (DNS)")


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
    host_and_port = parts.netloc.rpartition("@")[2]
    if ("[" in host_and_port or "]" in host_and_port) and not _BRACKETED.fullmatch(host_and_port):
        # urlsplit reads the address inside the brackets and drops what surrounds it
        # ("[2001:db8::1]junk"): accepted, it failed at every attempt instead
        raise ValueError("an IPv6 address in brackets must be the whole host, with at most "
                         "a port after it ([2001:db8::1] or [2001:db8::1]:8080)")
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
        raise ValueError("header value may have no CR, LF, NUL or other control character "
                         "but tab (RFC 9110), and no lone surrogate")
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


def encode_body(body: Any) -> tuple[bytes | None, BodyKind]:
    """The bytes a body is sent as; ValidationFailed for one that cannot be sent as it is
    (lone surrogates, NaN or infinite numbers: not UTF-8, not JSON)."""
    try:
        if body is None:
            return None, BodyKind.NONE
        if isinstance(body, str):
            return body.encode(), BodyKind.TEXT
        return (json.dumps(body, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False).encode(), BodyKind.JSON)
    except UnicodeEncodeError:
        raise ValidationFailed([FieldError("body", "must be valid Unicode (no lone "
                                                   "surrogates)")]) from None
    except ValueError:
        raise ValidationFailed([FieldError("body", "NaN and infinite numbers are not "
                                                   "JSON")]) from None
    except RecursionError:  # the parser's own bound depends on its stack, as this one does
        raise ValidationFailed([FieldError("body", "nested too deeply")]) from None
    except TypeError:  # an in-process caller's set, bytes or date: HTTP bodies are JSON
        raise ValidationFailed([FieldError("body", "must be a JSON value")]) from None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A submission once its rules hold: what the Relay stores, whatever the wire was."""

    message_id: str
    content: Content
    destination: str | None = None
    event_time: datetime | None = None
    max_attempts: int | None = None
    initial_delay: float | None = None
    max_delay: float | None = None
    timeout_seconds: float | None = None
    deliver_at: datetime | None = None
    callback_url: str | None = None
