from __future__ import annotations

import pytest

from notify_relay.domain.redaction import REDACTED, is_credential, redact_headers


@pytest.mark.parametrize(
    "name",
    ["Authorization", "authorization", "Cookie", "X-Api-Key", "X-Auth-Token", "x-token",
     "Client-Secret", "X-Signing-Key", "Api-Key", "Proxy-Authorization", "X-Hub-Signature",
     "Set-Cookie", "X-Password"],
)
def test_credential_headers(name: str) -> None:
    assert is_credential(name)


@pytest.mark.parametrize("name", ["Content-Type", "X-Request-Id", "Accept", "X-Tenant"])
def test_ordinary_headers(name: str) -> None:
    assert not is_credential(name)


def test_redact_headers_keeps_names_hides_values() -> None:
    redacted = redact_headers([("Authorization", "Bearer s3cr3t"), ("X-Tenant", "acme")])
    assert redacted == {"Authorization": REDACTED, "X-Tenant": "acme"}
