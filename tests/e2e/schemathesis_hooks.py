"""Hooks for the schemathesis runs (SCHEMATHESIS_HOOKS): rules no schema can state.

`deliverAt` may be at most the server's cap (30 days) ahead of the moment of the request:
a bound relative to "now" that JSON Schema cannot express. Generated times are moved to
one in the past (which means "now") so that positive data stays valid; the rule itself is
tested in tests/e2e/test_scheduling_and_callbacks.py.

Every generated `targetUrl` and `callbackUrl` is pointed at localhost:9, path and query
kept: the server delivers what it accepts, and generated host names (svwi.com, ...) sent it
to the machine's DNS resolver, off loopback (tests make loopback traffic only), with
lookups that took up to 5 s each to fail. `localhost` comes from /etc/hosts, and nothing
listens on port 9: each attempt is refused at once. The URL must stay within the schema's
pattern (it leaves IPv6 literals out, and IPv4 ones too until 2026-12-06): a request the
hook made schema-violating was taken by schemathesis's stateful phase for negative data
that the server "accepted" (a failure seen once in CI). How a host is checked at
submission is tested in tests/unit/test_validation.py.

With URL_MAX_LENGTH in the environment (the positive runs), the loaded schema's URLs are
capped at that length. The coverage phase draws strings of exactly the maximum length, and
one less, through hypothesis, one character at a time against the URL pattern: at 2048 that
took 110 of the positive run's 140 s (a seventh of the whole suite), at 256 it takes 2 s.
The contract's 2048 is tested over HTTP in tests/e2e/test_api.py. The negative runs keep
the schema as served, so that their too-long URLs are too long for the server.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import schemathesis

VALID_DELIVER_AT = "2020-01-01T00:00:00Z"
LOOPBACK = "localhost:9"  # the server runs with --allow-networks 127.0.0.0/8


def _on_loopback(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=LOOPBACK))


def _schedulable(submission: Any) -> Any:
    if not isinstance(submission, dict):
        return submission
    submission = dict(submission)
    if isinstance(submission.get("deliverAt"), str):
        submission["deliverAt"] = VALID_DELIVER_AT
    for field in ("targetUrl", "callbackUrl"):
        if isinstance(submission.get(field), str):
            submission[field] = _on_loopback(submission[field])
    return submission


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):  # a batch
        return {**body, "messages": [_schedulable(item) for item in body["messages"]]}
    return _schedulable(body)


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    cap = os.environ.get("URL_MAX_LENGTH")
    if cap is None:
        return
    fields = raw_schema["components"]["schemas"]["Submission"]["properties"]
    for url in (fields["targetUrl"], *fields["callbackUrl"]["anyOf"]):
        if url.get("maxLength", 0) > int(cap):
            url["maxLength"] = int(cap)
