"""SigV4 signing for the AWS deployment (API Gateway with IAM authorization).

An `httpx.Auth` that signs every request, each retry afresh, with botocore's `SigV4Auth`
and the caller's credentials (a boto3 or botocore session, refreshed as botocore does).
botocore is imported only here, on first use: it is the `aws` extra.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from botocore.credentials import Credentials

# what is signed: what API Gateway sees as sent (hop-by-hop or proxy-rewritten headers are
# left out, as botocore leaves out user-agent and expect)
SIGNED_HEADERS = ("host", "content-type", "x-correlation-id")


class CredentialSource(Protocol):
    def get_credentials(self) -> Credentials | None: ...


class SigV4Auth(httpx.Auth):
    """Signs requests for `service` (`execute-api`) in `region` with the credentials of
    `session` (boto3.Session or botocore.session.Session; default: botocore's default
    credential chain: environment, profile, instance or task role)."""

    requires_request_body = True

    def __init__(self, region: str, session: CredentialSource | None = None, *,
                 service: str = "execute-api") -> None:
        try:
            import botocore.session
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("SigV4 needs botocore: pip install 'notify-relay-client[aws]'"
                              ) from exc
        self.region = region
        self.service = service
        self._session: CredentialSource = session or botocore.session.get_session()

    def sign(self, request: httpx.Request) -> None:
        from botocore.auth import SigV4Auth as BotocoreSigV4
        from botocore.awsrequest import AWSRequest

        credentials = self._session.get_credentials()
        if credentials is None:
            raise RuntimeError("no AWS credentials found for SigV4 signing")
        headers: dict[str, Any] = {name: request.headers[name] for name in SIGNED_HEADERS
                                   if name in request.headers}
        aws_request = AWSRequest(method=request.method, url=str(request.url),
                                 data=request.content, headers=headers)
        BotocoreSigV4(credentials.get_frozen_credentials(), self.service,
                      self.region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = aws_request.headers.get(name)
            if value is not None:
                request.headers[name] = str(value)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request
