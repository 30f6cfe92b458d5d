"""Signing secrets from Secrets Manager: the stack keeps them there, not in the Lambdas'
environment, where anyone allowed to read the function's configuration could see them.

The secret's string has the same form as NOTIFY_RELAY_SIGNING_SECRETS
(`senderA=whsec_...,senderB=whsec_...`); empty means no sender signs. It is read once per
execution environment, as the runtime starts (its first invocation, so never into a
SnapStart snapshot): a rotated value reaches new environments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from notify_relay.config import ConfigError, parse_signing_secrets

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


def signing_secrets(client: SecretsManagerClient, arn: str) -> Mapping[str, str]:
    value = client.get_secret_value(SecretId=arn).get("SecretString", "")
    try:
        return parse_signing_secrets(value) if value.strip() else {}
    except ConfigError as exc:  # the value is not echoed: it is a secret
        raise ConfigError(f"the signing secrets in {arn} are malformed: {exc}") from None
