"""The API Lambda behind the HTTP API (payload 2.0): the same app, the caller's IAM
principal read from the 2.0 event, the open health route."""

from __future__ import annotations

import base64
from typing import Any

import orjson

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
