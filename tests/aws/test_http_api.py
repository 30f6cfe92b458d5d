"""The API Lambda behind the HTTP API (payload 2.0): the same app, the caller's IAM
principal read from the 2.0 event, the open health route."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from notify_relay.lambdas import api as api_lambda
from tests.aws.lambda_harness import FakeContext, http_api_event
from tests.aws.moto import AwsResources
from tests.aws.test_lambdas_e2e import lambdas  # noqa: F401  (the fixture)
from tests.partner import Partner


def call(method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    response = api_lambda.handler(http_api_event(method, path, body, **kwargs),
                                  FakeContext())
    raw = response.get("body")
    if raw and response.get("isBase64Encoded"):  # problem+json is not text to Mangum
        raw = base64.b64decode(raw).decode()
    return response["statusCode"], orjson.loads(raw) if raw else None


def test_submit_get_and_list_through_the_http_api(lambdas: AwsResources,  # noqa: F811
                                                  partner: Partner) -> None:
    code, body = call("POST", "/v1/messages",
                      {"messageId": "h-1", "targetUrl": partner.url("/ok")})
    assert (code, body["status"]) == (202, "QUEUED"), body
    code, body = call("POST", "/v1/messages/batch", {"messages": [
        {"messageId": "h-2", "targetUrl": partner.url("/ok")}]})
    assert code in (200, 202, 207), body
    code, body = call("GET", "/v1/messages/h-1")
    assert (code, body["senderId"]) == (200, "orders"), body
    code, body = call("GET", "/v1/messages", query={"status": "QUEUED", "limit": "10"})
    assert code == 200, body
    assert {m["messageId"] for m in body["items"]} == {"h-1", "h-2"}


def test_the_principal_decides_the_sender(lambdas: AwsResources) -> None:  # noqa: F811
    code, body = call("GET", "/v1/messages",
                      principal="arn:aws:iam::123456789012:role/stranger")
    assert (code, body["code"]) == (403, "FORBIDDEN")
    code, body = call("GET", "/v1/messages", principal=None)  # no IAM identity at all
    assert code in (401, 403), body
    code, body = call("GET", "/healthz", principal=None)  # the open route
    assert (code, body) == (200, {"status": "ok"})


def test_the_api_counts_submissions_as_emf_metrics(
        lambdas: AwsResources, partner: Partner,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    """What the embedded server's /metrics counts, in CloudWatch: accepted, duplicate and
    rejected submissions (single and batch), one EMF document per invocation."""
    capsys.readouterr()
    ok = {"messageId": "m-1", "targetUrl": partner.url("/ok")}
    assert call("POST", "/v1/messages", ok)[0] == 202
    assert call("POST", "/v1/messages", ok)[0] == 200  # a duplicate
    assert call("POST", "/v1/messages", {"messageId": "bad id!"})[0] == 400
    code, _ = call("POST", "/v1/messages/batch", {"messages": [
        {"messageId": "m-2", "targetUrl": partner.url("/ok")}, {"messageId": "m-3"}]})
    assert code == 200
    totals: dict[str, float] = {}
    for text in capsys.readouterr().out.splitlines():
        if text.startswith("{") and '"_aws"' in text:
            document = orjson.loads(text)
            if document.get("service") == "api":
                for metric in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                    value = document[metric["Name"]]  # a list when added more than once
                    totals[metric["Name"]] = totals.get(metric["Name"], 0) + (
                        sum(value) if isinstance(value, list) else value)
    assert totals == {"SubmissionsAccepted": 2, "SubmissionsDuplicate": 1,
                      "SubmissionsRejected": 2}
