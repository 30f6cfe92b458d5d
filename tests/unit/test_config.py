"""Settings: flags over NOTIFY_RELAY_* variables over defaults; bad values named at once."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest

from notify_relay.config import AwsSettings, ConfigError, load

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_defaults_match_the_contract() -> None:
    settings = load({}, environ={})
    assert (settings.host, settings.port, settings.db) == ("127.0.0.1", 8080, "./notify-relay.db")
    assert settings.api_keys == {}
    assert settings.signing_secrets == {}
    assert settings.allow_networks == ()
    assert settings.loopback_only


def test_flag_wins_over_environment() -> None:
    settings = load({"port": "9000"}, environ={"NOTIFY_RELAY_PORT": "9001",
                                               "NOTIFY_RELAY_HOST": "0.0.0.0"})
    assert settings.port == 9000
    assert settings.host == "0.0.0.0"
    assert not settings.loopback_only


def test_pairs_parsed() -> None:
    settings = load({"api_keys": "k1=senderA, k=2=senderB",
                     "signing_secrets": f"senderA={SECRET}",
                     "allow_networks": "127.0.0.0/8,::1/128"}, environ={})
    assert settings.api_keys == {"k1": "senderA", "k=2": "senderB"}
    assert settings.signing_secrets == {"senderA": SECRET}
    assert settings.allow_networks == (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": "http"}, "--port"),
        ({"port": "70000"}, "--port"),
        ({"api_keys": "no-sender"}, "api-keys"),
        ({"api_keys": "k=bad sender"}, "api-keys"),
        ({"signing_secrets": "senderA=not-base64!"}, "signing-secrets"),
        ({"allow_networks": "10.0.0.0/33"}, "allow-networks"),
        ({"concurrency": "0"}, "--concurrency"),
        ({"initial_delay": "10", "max_delay": "5"}, "max-delay"),
        ({"access_log": "maybe"}, "--access-log"),
        ({"signing_secrets": f"senderA={SECRET}"}, "signing-secrets need api-keys"),
        ({"destination_concurrency": "0"}, "--destination-concurrency"),
        ({"destination_concurrency": "1001"}, "--destination-concurrency"),
        ({"breaker_failures": "0"}, "--breaker-failures"),
        ({"head_timeout": "-1"}, "--head-timeout"),
    ],
)
def test_bad_values_are_named(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(flags, environ={})


def test_secrets_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load({"api_keys": "supersecretkey"}, environ={})
    assert "supersecretkey" not in str(info.value)


def test_retry_limits_from_settings() -> None:
    limits = load({"max_attempts": "4", "initial_delay": "2", "max_delay": "60",
                   "timeout": "10", "retry_after_cap": "120"}, environ={}).retry_limits
    assert (limits.default_policy.max_attempts, limits.default_policy.initial_delay,
            limits.default_policy.max_delay) == (4, 2.0, 60.0)
    assert (limits.default_timeout, limits.retry_after_cap) == (10.0, 120.0)


def test_aws_settings_require_their_resources() -> None:
    with pytest.raises(ConfigError, match="NOTIFY_RELAY_TABLE"):
        AwsSettings.from_env({})
    settings = AwsSettings.from_env({
        "NOTIFY_RELAY_TABLE": "t", "NOTIFY_RELAY_DESTINATIONS_TABLE": "dt",
        "NOTIFY_RELAY_QUEUE_URL": "q", "NOTIFY_RELAY_DEAD_LETTER_URL": "d",
        "NOTIFY_RELAY_BUCKET": "b",
        "NOTIFY_RELAY_IAM_SENDERS": "arn:aws:iam::1:role/r=orders",
        "NOTIFY_RELAY_MAX_ATTEMPTS": "5"})
    assert settings.iam_senders == {"arn:aws:iam::1:role/r": "orders"}
    assert settings.retry_limits.default_policy.max_attempts == 5
    assert settings.destinations_table == "dt"


def test_cli_refuses_signing_secrets_without_keys_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "notify_relay.cli", "serve",
                             "--signing-secrets", f"a={SECRET}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "signing-secrets need api-keys" in result.stderr
    assert SECRET not in result.stderr


def test_cli_reports_a_bad_flag_without_a_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "notify_relay.cli", "serve", "--port", "x"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("notify-relay: error: --port")
    assert "Traceback" not in result.stderr
