"""Signing secrets read from Secrets Manager (moto's server): the value's form, an empty
placeholder, and a malformed value named without echoing it."""

from __future__ import annotations

import time

import pytest

from notify_relay.adapters.aws.secrets import signing_secrets
from notify_relay.config import ConfigError
from tests.aws.moto import AwsResources, client

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def stored(aws: AwsResources, value: str) -> str:
    return client("secretsmanager", aws.endpoint).create_secret(
        Name=f"signing-{time.monotonic_ns()}", SecretString=value)["ARN"]


def test_pairs_are_read(aws: AwsResources) -> None:
    arn = stored(aws, f"orders={SECRET},billing={SECRET}")
    assert signing_secrets(client("secretsmanager", aws.endpoint), arn) == {
        "orders": SECRET, "billing": SECRET}


def test_the_stacks_placeholder_means_no_sender_signs(aws: AwsResources) -> None:
    assert signing_secrets(client("secretsmanager", aws.endpoint), stored(aws, " ")) == {}


def test_a_malformed_value_is_named_but_not_echoed(aws: AwsResources) -> None:
    arn = stored(aws, "orders:whsec_AAAA")
    with pytest.raises(ConfigError, match="malformed") as raised:
        signing_secrets(client("secretsmanager", aws.endpoint), arn)
    assert "whsec_AAAA" not in str(raised.value)
