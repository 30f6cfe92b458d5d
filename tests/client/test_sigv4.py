"""SigV4 against the API Lambda on moto.

No API Gateway runs here, so `FakeGateway` (an httpx transport) plays its IAM part
honestly: it recomputes each request's signature from the caller's secret with botocore's
signer, over the headers the request names as signed, refuses any mismatch with 403 as API
Gateway does, and only then hands the request to `notify_relay.lambdas.api.handler` as the
API Gateway event of the signing principal. The client signs with a boto3 session's
credentials; a wrong secret, or a body changed after signing, is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from urllib.parse import unquote

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth as BotocoreSigV4
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from notify_relay_client import Client, ForbiddenError, MessageStatus, SigV4Auth

from notify_relay.lambdas import api as api_lambda
from tests.aws.lambda_harness import ROLE, FakeContext, api_event
from tests.aws.moto import REGION, AwsResources

pytestmark = pytest.mark.e2e
BASE = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
ACCESS_KEY, SECRET_KEY, TOKEN = "AKIACLIENTEXAMPLE", "client-secret-key", "session-token-1"


def signature_is_valid(request: httpx.Request, secret: str, token: str | None) -> bool:
    scheme, _, fields = request.headers.get("authorization", "").partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return False
    parts = dict(p.strip().split("=", 1) for p in fields.split(","))
    access_key, day, region, service, terminal = parts["Credential"].split("/")
    amz_date = request.headers.get("x-amz-date", "")
    signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if (terminal, service, day) != ("aws4_request", "execute-api", amz_date[:8]) or \
            abs((datetime.now(UTC) - signed_at).total_seconds()) > 300:
        return False
    if request.headers.get("x-amz-security-token") != token:
        return False
    signed = parts["SignedHeaders"].split(";")
    if not {"host", "x-amz-date"} <= set(signed):
        return False
    copy = AWSRequest(method=request.method, url=str(request.url), data=request.content,
                      headers={name: request.headers[name] for name in signed})
    copy.context["timestamp"] = amz_date
    signer = BotocoreSigV4(Credentials(access_key, secret, token), service, region)
    expected = signer.signature(signer.string_to_sign(copy, signer.canonical_request(copy)),
                                copy)
    return bool(expected == parts["Signature"])


class FakeGateway(httpx.BaseTransport):
    """API Gateway's IAM authorization, then the API Lambda (REST API, stage `prod`)."""

    def __init__(self, principals: dict[str, tuple[str, str | None, str]]) -> None:
        self.principals = principals  # access key -> (secret, token, principal ARN)
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        access_key = request.headers.get("authorization", "").partition("Credential=")[2][:17]
        known = self.principals.get(access_key)
        if known is None or not signature_is_valid(request, known[0], known[1]):
            self.refused += 1
            return httpx.Response(403, json={"message": "The request signature we calculated "
                                             "does not match the signature you provided."})
        path = unquote(request.url.path.removeprefix("/prod"))
        body = json.loads(request.content) if request.content else None
        headers = {k: v for k, v in request.headers.items() if k.lower() == "x-correlation-id"}
        event = api_event(request.method, path, body, query=dict(request.url.params) or None,
                          principal=known[2], headers=headers)
        response = api_lambda.handler(event, FakeContext())
        raw = response["body"] or ""
        content = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        return httpx.Response(response["statusCode"], headers=response.get("headers") or {},
                              content=content)


@pytest.fixture
def gateway(aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    for name, value in aws.env(NOTIFY_RELAY_IAM_SENDERS=f"{ROLE}=orders",
                               NOTIFY_RELAY_ALLOW_NETWORKS="127.0.0.0/8").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setattr(api_lambda, "_handler", None)
    return FakeGateway({ACCESS_KEY: (SECRET_KEY, TOKEN, ROLE)})


def session(secret: str = SECRET_KEY) -> boto3.Session:
    return boto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
                         aws_session_token=TOKEN, region_name=REGION)


def test_signed_calls_reach_the_api_lambda(gateway: FakeGateway) -> None:
    with Client.for_aws(BASE, REGION, session(), transport=gateway) as client:
        submitted = client.submit("http://127.0.0.1:9/ok", message_id="sig:1@a",
                                  body={"a": 1}, correlation_id="corr-sigv4")
        assert (submitted.sender_id, submitted.status) == ("orders", MessageStatus.QUEUED)
        assert client.submit("http://127.0.0.1:9/ok", message_id="sig:1@a",
                             body={"a": 1}).duplicate
        message = client.get("sig:1@a")
        assert (message.message_id, message.correlation_id) == ("sig:1@a", "corr-sigv4")
        assert [m.message_id for m in client.list(status="QUEUED")] == ["sig:1@a"]
    assert gateway.refused == 0


def test_a_wrong_secret_is_refused(gateway: FakeGateway) -> None:
    auth = SigV4Auth(REGION, session("not-the-secret"))
    with Client(BASE, auth=auth, transport=gateway) as client, \
            pytest.raises(ForbiddenError) as raised:
        client.get("anything")
    assert raised.value.detail.startswith("The request signature we calculated")
    assert gateway.refused == 1  # a 403 is not retried


def test_the_gateway_check_is_real() -> None:
    request = httpx.Request("POST", BASE + "/v1/messages", json={"messageId": "x"})
    SigV4Auth(REGION, session()).sign(request)
    assert signature_is_valid(request, SECRET_KEY, TOKEN)
    assert not signature_is_valid(request, "other", TOKEN)
    tampered = httpx.Request("POST", BASE + "/v1/messages", json={"messageId": "y"},
                             headers=dict(request.headers))
    assert not signature_is_valid(tampered, SECRET_KEY, TOKEN)
