"""Every rule of the contract's submission table, accepted and refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from notify_relay.api.submission import Submission
from notify_relay.domain.destination import (
    LOOKUP_NAME_PATTERN,
    default_destination,
    is_valid_name,
)
from notify_relay.domain.errors import ValidationFailed
from notify_relay.domain.message import BodyKind
from notify_relay.domain.retry import RetryLimits

BASE: dict[str, Any] = {"messageId": "m-1", "targetUrl": "https://partner.example/hook"}


def parse(**changes: Any) -> Submission:
    return Submission.model_validate({**BASE, **changes})


def error_fields(**changes: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        parse(**changes)
    return [".".join(str(p) for p in e["loc"] if p != "[key]") for e in info.value.errors()]


@pytest.mark.parametrize(
    "message_id",
    ["a", "A.b_c:d@e-f", "x" * 128, "0123456789"],
)
def test_valid_message_ids(message_id: str) -> None:
    assert parse(messageId=message_id).messageId == message_id


@pytest.mark.parametrize(
    "message_id", ["", "x" * 129, "has space", "slash/no", "ünïcode", "a#b", 123, None]
)
def test_invalid_message_ids(message_id: Any) -> None:
    assert error_fields(messageId=message_id) == ["messageId"]


@pytest.mark.parametrize("sender_id", ["", "s" * 65, "a b", 7])
def test_invalid_sender_ids(sender_id: Any) -> None:
    assert error_fields(senderId=sender_id) == ["senderId"]


def test_sender_id_up_to_64() -> None:
    assert parse(senderId="s" * 64).senderId == "s" * 64


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com:8443/a/b?c=d#e",
        "http://203.0.113.9/x",
        "http://[2001:db8::1]:8080/x",
        "https://example.com/" + "a" * (2048 - len("https://example.com/")),
        "https://example.com./x",  # fully qualified
        "https://xn--bcher-kva.example/",  # an internationalized name, IDNA-encoded
        "http://0.0.0.0/", "http://255.255.255.255/", "http://10.1.2.3:81/",
        "https://api2.example/", "https://1.2.3.4.example/",
        "https://example.com/caf\u00e9",  # non-ASCII in the path is sent as given
        "https://_dmarc.srv_1.example/", "https://-odd-.example/",  # as resolvers take them
        f"https://{'a' * 63}.{'b' * 63}.example.com/",
        f"https://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}.:65535/",  # 253 and the dot
        "http://[::ffff:192.0.2.1]/",
        "http://[2001:db8::1]:/x",  # an empty port, as for a name
    ],
)
def test_valid_urls(url: str) -> None:
    assert parse(targetUrl=url).targetUrl == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "example.com/x",
        "/relative",
        "http://",
        "https://user:pass@example.com/",
        "https://user@example.com/",
        "https://example.com/a b",
        "https://example.com/\nx",
        "http://example.com:99999/",
        "http://example.com:0/",
        "https://example.com/" + "a" * 2048,
        "",
        42,
        # a non-ASCII host, accepted before, then failed in the worker outside its handling
        "http://b\u00fccher.example/",
        # numbers that URL parsers read as IPv4 in other forms: refused at submission
        "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/", "http://0177.0.0.1/",
        "http://127.0.0.1./", "http://0/", "http://017700000001/", "http://0x7f.1/",
        "http://1.2.3.256/", "http://01.2.3.4/", "http://example.123/",
        "http://\uff11\uff12\uff17.0.0.1/",  # full-width digits
        "http://[::1x]/",
        "https://example.com/\udc80",  # a lone surrogate
        # not DNS names: never delivered, and a default destination outside the name rules
        "http://exa%6dple.com/", "http://ex!ample.com/", "http://a..b/", "http://.a/",
        "http://a,b.example/", "http://a*.example/", f"http://{'a' * 64}.example/",
        f"http://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 62}/",  # 254
        "http://[fe80::1%25eth0]/",  # a zone: one machine's interface, and a `%`
        # more than the brackets in the host: urlsplit dropped the rest, delivery failed
        "https://[2001:db8::1]junk/hook", "http://x[2001:db8::1]:8080/", "http://[::1]]:80/",
        "http://[[::1]]/", "http://[::1]:80]/", "http://[2001:db8::1]:8080x/", "http://]x/",
    ],
)
def test_invalid_urls(url: Any) -> None:
    assert error_fields(targetUrl=url) == ["targetUrl"]


@pytest.mark.parametrize("url", [
    f"https://{'a' * 63}.{'b' * 63}.example.com/",
    f"https://{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}.:65535/",
    "http://[::ffff:192.0.2.1]:65535/",
    "http://_dmarc.example/",
])
def test_every_default_destination_of_an_accepted_target_can_be_looked_up(url: str) -> None:
    """A host of 143 characters was accepted and named a destination that GET and PATCH
    refused; only a sender's own names keep to 1-128."""
    name = default_destination(parse(targetUrl=url).targetUrl)
    assert re.fullmatch(LOOKUP_NAME_PATTERN, name), name
    assert is_valid_name(name) is (len(name) <= 128)


def test_missing_required_fields() -> None:
    with pytest.raises(ValidationError) as info:
        Submission.model_validate({})
    assert sorted(e["loc"][0] for e in info.value.errors()) == ["messageId", "targetUrl"]


@pytest.mark.parametrize("method", ["get", "POST", "Put", "patch", "DELETE"])
def test_methods_any_case(method: str) -> None:
    assert parse(method=method).method == method.upper()


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "CONNECT", "", "P OST"])
def test_refused_methods(method: str) -> None:
    assert error_fields(method=method) == ["method"]


def test_default_method_is_post() -> None:
    assert parse().method == "POST"


@pytest.mark.parametrize(
    "name",
    ["Host", "content-length", "Transfer-Encoding", "Connection", "Upgrade", "TE", "Trailer",
     "Keep-Alive", "Proxy-Authorization", "proxy-anything"],
)
def test_refused_header_names(name: str) -> None:
    assert error_fields(headers={name: "x"}) == [f"headers.{name}"]


@pytest.mark.parametrize("name", ["Bad Name", "a:b", "", "x\r\ny", "tab\t", "é"])
def test_header_names_must_be_tokens(name: str) -> None:
    assert error_fields(headers={name: "x"}) == [f"headers.{name}"]


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "a\x0bb", "\x01", "del\x7f",
                                   "esc\x1b", "lone\udc80"])
def test_header_values_are_rfc_9110_field_values(value: str) -> None:
    assert error_fields(headers={"X-Foo": value}) == ["headers.X-Foo"]


@pytest.mark.parametrize("value", ["caf\u00e9 \u2713", "tab\there", "\u20ac 5", "", " x "])
def test_header_values_beyond_ascii_are_taken_as_the_contract_says(value: str) -> None:
    """The contract refuses CR, LF and NUL: a value in UTF-8 (obs-text) goes through."""
    assert parse(headers={"X-Foo": value}).content().headers == (("X-Foo", value),)


def test_header_values_must_be_strings() -> None:
    assert error_fields(headers={"X-Foo": 1}) == ["headers.X-Foo"]


def test_header_names_unique_ignoring_case() -> None:
    assert error_fields(headers={"X-A": "1", "x-a": "2"}) == ["headers"]


def test_at_most_64_headers() -> None:
    headers = {f"X-H{i}": "v" for i in range(64)}
    assert len(parse(headers=headers).headers) == 64
    headers["X-One-Too-Many"] = "v"
    assert error_fields(headers=headers) == ["headers"]


def test_valid_headers_kept_in_order() -> None:
    sub = parse(headers={"X-B": "2", "Authorization": "Bearer t", "X-A": ""})
    assert sub.content().headers == (("X-B", "2"), ("Authorization", "Bearer t"), ("X-A", ""))


@pytest.mark.parametrize(
    ("body", "kind", "payload"),
    [
        (None, BodyKind.NONE, None),
        ("plain text é", BodyKind.TEXT, "plain text é".encode()),
        ("", BodyKind.TEXT, b""),
        ({"b": 1, "a": [1, 2.5, None, True]}, BodyKind.JSON, b'{"b":1,"a":[1,2.5,null,true]}'),
        ([1, "x"], BodyKind.JSON, b'[1,"x"]'),
        (7, BodyKind.JSON, b"7"),
        (False, BodyKind.JSON, b"false"),
        ({"k": "ü"}, BodyKind.JSON, '{"k":"ü"}'.encode()),
    ],
)
def test_body_forms(body: Any, kind: BodyKind, payload: bytes | None) -> None:
    content = parse(body=body).content()
    assert content.body_kind is kind
    assert content.body == payload


def test_absent_body_sends_nothing() -> None:
    assert parse().content().body is None


@pytest.mark.parametrize("timestamp", ["2026-11-28T23:59:59.123Z", "2026-11-28T23:59:59+02:00",
                                       "2026-11-28t23:59:59z", "0001-01-01T00:00:00Z",
                                       "9999-12-31T23:59:59.999999999Z",
                                       "0001-01-01T00:00:00-05:00"])
def test_valid_timestamps(timestamp: str) -> None:
    assert parse(timestamp=timestamp).event_time() is not None


@pytest.mark.parametrize(
    "timestamp", ["yesterday", "2026-11-28", "2026-11-28T23:59:59", 1700000000,
                  # beyond year 1 once in UTC: every read of the message answered 500
                  "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00",
                  # ISO 8601 forms that are not RFC 3339
                  "2026-W01-1T00:00:00Z", "20260101T000000Z", "2026-11-28 23:59:59Z",
                  "2026-11-28T23:59Z", "2026-02-30T00:00:00Z", "2026-11-28T23:59:60Z",
                  "2026-11-28T23:59:59+0200", "\uff12026-11-28T23:59:59Z"]
)
def test_invalid_timestamps(timestamp: Any) -> None:
    assert error_fields(timestamp=timestamp) == ["timestamp"]


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"maxAttempts": 0}, "retryPolicy.maxAttempts"),
        ({"maxAttempts": 101}, "retryPolicy.maxAttempts"),
        ({"maxAttempts": 2.5}, "retryPolicy.maxAttempts"),
        ({"maxAttempts": "3"}, "retryPolicy.maxAttempts"),
        ({"maxAttempts": True}, "retryPolicy.maxAttempts"),
        ({"initialDelaySeconds": 0}, "retryPolicy.initialDelaySeconds"),
        ({"initialDelaySeconds": -1}, "retryPolicy.initialDelaySeconds"),
        ({"maxDelaySeconds": 0}, "retryPolicy.maxDelaySeconds"),
        ({"unknown": 1}, "retryPolicy.unknown"),
    ],
)
def test_retry_policy_bounds(policy: dict[str, Any], field: str) -> None:
    assert error_fields(retryPolicy=policy) == [field]


def test_max_delay_below_initial_delay_caps_it() -> None:
    """No rule across two fields, which a schema cannot tell a client: the server caps."""
    policy = parse(retryPolicy={"initialDelaySeconds": 10, "maxDelaySeconds": 5}).retryPolicy
    assert policy is not None
    effective = RetryLimits().effective_policy(None, policy.initialDelaySeconds,
                                                policy.maxDelaySeconds)
    assert (effective.initial_delay, effective.max_delay) == (5, 5)


def test_an_integral_float_is_a_json_integer() -> None:
    policy = parse(retryPolicy={"maxAttempts": 3.0}).retryPolicy
    assert policy is not None
    assert policy.maxAttempts == 3
    assert isinstance(policy.maxAttempts, int)


@pytest.mark.parametrize("attempts", [1, 100])
def test_retry_policy_limits_inclusive(attempts: int) -> None:
    policy = parse(retryPolicy={"maxAttempts": attempts, "initialDelaySeconds": 0.5}).retryPolicy
    assert policy is not None
    assert policy.maxAttempts == attempts


@pytest.mark.parametrize("timeout", [0, -1, "5"])
def test_timeout_positive_number(timeout: Any) -> None:
    assert error_fields(timeoutSeconds=timeout) == ["timeoutSeconds"]


def test_unknown_fields_refused() -> None:
    assert error_fields(targetURL="https://x.example") == ["targetURL"]


def test_fingerprint_ignores_header_case_and_order_but_not_content() -> None:
    a = parse(headers={"X-A": "1", "X-B": "2"}, body={"x": 1}).content().fingerprint()
    b = parse(headers={"x-b": "2", "x-a": "1"}, body={"x": 1}).content().fingerprint()
    assert a == b
    assert a != parse(headers={"X-A": "1", "X-B": "3"}, body={"x": 1}).content().fingerprint()
    assert a != parse(headers={"X-A": "1", "X-B": "2"}, body={"x": 2}).content().fingerprint()
    assert a != parse(headers={"X-A": "1", "X-B": "2"}, body={"x": 1},
                      method="PUT").content().fingerprint()
    assert a != parse(headers={"X-A": "1", "X-B": "2"}, body={"x": 1},
                      targetUrl="https://partner.example/other").content().fingerprint()


def test_string_and_json_bodies_differ_in_fingerprint() -> None:
    assert parse(body="1").content().fingerprint() != parse(body=1).content().fingerprint()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("lone \udc80", "surrogates"),
        ({"k\udc80": 1}, "surrogates"),
        ({"x": float("nan")}, "NaN"),
        ([float("inf")], "NaN"),
        # an in-process caller's values; HTTP bodies come as JSON values (it was a 500)
        ({1, 2}, "JSON value"), ({"at": b"bytes"}, "JSON value"),
    ],
)
def test_bodies_that_cannot_be_sent_are_refused(body: Any, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(body=body).content()
    assert [e.field for e in info.value.errors] == ["body"]
    assert message in info.value.errors[0].message
