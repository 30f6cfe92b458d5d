"""Hooks for the schemathesis runs (SCHEMATHESIS_HOOKS): rules no schema can state.

`deliverAt` may be at most the server's cap (30 days) ahead of the moment of the request:
a bound relative to "now" that JSON Schema cannot express. Generated times are moved to
one in the past (which means "now") so that positive data stays valid; the rule itself is
tested in tests/e2e/test_scheduling_and_callbacks.py.
"""

from __future__ import annotations

from typing import Any

import schemathesis

VALID_DELIVER_AT = "2020-01-01T00:00:00Z"


def _schedulable(submission: Any) -> Any:
    if isinstance(submission, dict) and isinstance(submission.get("deliverAt"), str):
        return {**submission, "deliverAt": VALID_DELIVER_AT}
    return submission


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("messages"), list):  # a batch
        return {**body, "messages": [_schedulable(item) for item in body["messages"]]}
    return _schedulable(body)
