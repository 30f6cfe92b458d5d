"""One typed Settings, read once from flags and NOTIFY_RELAY_* variables (the flag wins).

A missing or bad value raises ConfigError at once, naming the setting.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from standardwebhooks import Webhook

from notify_relay.domain.destination import MAX_CONCURRENCY_LIMIT, BreakerConfig, Rules
from notify_relay.domain.network import IPNetwork, parse_networks
from notify_relay.domain.retry import RetryLimits, RetryPolicy
from notify_relay.domain.submission import ID_ALPHABET

ENV_PREFIX = "NOTIFY_RELAY_"
_SENDER = re.compile(rf"{ID_ALPHABET}{{1,64}}")


class ConfigError(ValueError):
    """A setting is missing or invalid."""


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        left, sep, right = item.partition("=")
        if not sep or not left or not right:
            raise ConfigError(f"{what}: expected NAME=VALUE pairs separated by commas")
        pairs.append((left.strip(), right.strip()))
    return pairs


def parse_api_keys(text: str) -> dict[str, str]:
    """`key1=senderA,key2=senderB` -> {key: sender}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, sender = item.rpartition("=")
        if not sep or not key or not _SENDER.fullmatch(sender):
            raise ConfigError("api-keys: expected key=senderId pairs separated by commas")
        keys[key] = sender
    return keys


def parse_signing_secrets(text: str) -> dict[str, str]:
    """`senderA=whsec_...` -> {sender: secret}; each secret is checked by standardwebhooks."""
    secrets = dict(_pairs(text, "signing-secrets"))
    for sender, secret in secrets.items():
        if not _SENDER.fullmatch(sender):
            raise ConfigError(f"signing-secrets: {sender!r} is not a valid senderId")
        try:
            Webhook(secret)
        except Exception:
            raise ConfigError(f"signing-secrets: the secret for {sender} is not a "
                              "base64 whsec_ secret") from None
    return secrets


def parse_allow_networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(text.split(","))
    except ValueError as exc:
        raise ConfigError(f"allow-networks: {exc}") from None


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError("must be positive")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be {low}-{high}")
        return value

    return parse


def destination_rules(concurrency: int, failures: int, cooldown: float,
                      retry_after_cap: float) -> Rules:
    return Rules(
        default_concurrency=concurrency,
        breaker=BreakerConfig(failures=failures, cooldown=cooldown,
                              max_cooldown=max(cooldown, 600.0)),
        retry_after_cap=retry_after_cap,
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be 0-65535")
    return value


def _host(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _opt(parse: Callable[[str], Any], help_text: str, default: Any,
         metavar: str | None = None) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help_text,
                                            "metavar": metavar})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _opt(_host, "listen address", "127.0.0.1")
    port: int = _opt(_port, "listen port", 8080)
    db: str = _opt(str, "SQLite file", "./notify-relay.db", "PATH")
    api_keys: Mapping[str, str] = _opt(parse_api_keys, "key1=senderA,key2=senderB; none: "
                                       "no authentication (loopback only)", None, "PAIRS")
    signing_secrets: Mapping[str, str] = _opt(parse_signing_secrets,
                                              "senderA=whsec_...,senderB=whsec_...", None, "PAIRS")
    allow_networks: tuple[IPNetwork, ...] = _opt(
        parse_allow_networks, "CIDRs that targets may resolve to although private, "
        "e.g. 127.0.0.0/8", (), "CIDRS")
    concurrency: int = _opt(_positive(int), "attempts in flight at once", 128)
    max_attempts: int = _opt(_positive(int), "default attempts per message", 12)
    initial_delay: float = _opt(_positive(float), "default first retry delay (s)", 5.0)
    max_delay: float = _opt(_positive(float), "default longest retry delay (s)", 7200.0)
    max_delay_cap: float = _opt(_positive(float), "cap on a request's maxDelaySeconds (s)",
                                86400.0)
    timeout: float = _opt(_positive(float), "default per-attempt timeout (s)", 30.0)
    max_timeout: float = _opt(_positive(float), "cap on a request's timeoutSeconds (s)", 120.0)
    retry_after_cap: float = _opt(_positive(float), "cap on a partner's Retry-After (s)", 3600.0)
    destination_concurrency: int = _opt(
        _bounded_int(1, MAX_CONCURRENCY_LIMIT),
        "attempts in flight per destination unless set on it", 32)
    breaker_failures: int = _opt(_positive(int),
                                 "failures in a row that open a destination's breaker", 5)
    breaker_cooldown: float = _opt(_positive(float),
                                   "first cool-down of an open breaker (s); doubles, to 10 min",
                                   30.0)
    rate_limit: float = _opt(float, "submissions per second per sender; 0: unlimited", 0.0)
    rate_burst: float = _opt(_positive(float), "burst above --rate-limit", 100.0)
    shutdown_grace: float = _opt(float, "seconds in-flight attempts get to finish on stop", 10.0)
    head_timeout: float = _opt(_positive(float),
                               "seconds a client has to send a request's head", 10.0)
    request_timeout: float = _opt(_positive(float),
                                  "seconds a client has to send a whole request", 60.0)
    metrics_need_key: bool = _opt(_bool, "with --api-keys, /metrics answers only a valid key",
                                  False)
    log_level: str = _opt(str.upper, "DEBUG, INFO, WARNING or ERROR", "INFO")
    access_log: bool = _opt(_bool, "log every HTTP request", False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_keys", dict(self.api_keys or {}))
        object.__setattr__(self, "signing_secrets", dict(self.signing_secrets or {}))
        if self.max_delay < self.initial_delay:
            raise ConfigError("max-delay must not be below initial-delay")
        if self.signing_secrets and not self.api_keys:
            raise ConfigError("signing-secrets need api-keys: without keys, anyone who can "
                              "reach the port could have requests signed with a sender's "
                              "secret sent wherever they choose")

    @property
    def retry_limits(self) -> RetryLimits:
        return RetryLimits(
            default_policy=RetryPolicy(self.max_attempts, self.initial_delay,
                                       min(self.max_delay, self.max_delay_cap)),
            max_attempts_cap=100,
            max_delay_cap=self.max_delay_cap,
            retry_after_cap=self.retry_after_cap,
            default_timeout=min(self.timeout, self.max_timeout),
            max_timeout=self.max_timeout,
        )

    @property
    def destination_rules(self) -> Rules:
        return destination_rules(self.destination_concurrency, self.breaker_failures,
                                 self.breaker_cooldown, self.retry_after_cap)

    @property
    def loopback_only(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for f in fields(Settings):
        env = ENV_PREFIX + f.name.upper()
        parser.add_argument(_flag(f.name), dest=f.name, default=None,
                            metavar=f.metadata["metavar"] or f.name.upper(),
                            help=f"{f.metadata['help']} [env {env}]")


def load(flags: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (as strings, None when absent) over the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = flags.get(f.name)
        if raw is None:
            raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{_flag(f.name)}: {raw!r}: {exc}") from None
    return Settings(**values)


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """The Lambdas' settings, from the environment the CDK stack gives them.

    boto3 reads the region, credentials and (for tests against moto) AWS_ENDPOINT_URL
    itself.
    """

    table: str
    destinations_table: str
    queue_url: str
    dead_letter_url: str
    bucket: str
    iam_senders: Mapping[str, str]
    signing_secrets: Mapping[str, str]
    allow_networks: tuple[IPNetwork, ...]
    visibility_timeout: float
    paused_recheck: float  # how long a paused destination's records wait in SQS per hold
    reconcile_grace: float  # a younger message may still be in its API Lambda's hands
    retry_limits: RetryLimits
    destination_rules: Rules

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ

        def required(name: str) -> str:
            value = env.get(ENV_PREFIX + name)
            if not value:
                raise ConfigError(f"{ENV_PREFIX}{name} is required")
            return value

        base = load({}, {k: v for k, v in env.items()
                         if k.removeprefix(ENV_PREFIX).lower() in _LIMIT_FIELDS})
        senders = dict(_pairs(env.get(ENV_PREFIX + "IAM_SENDERS", ""), "iam-senders"))
        for sender in senders.values():
            if not _SENDER.fullmatch(sender):
                raise ConfigError(f"iam-senders: {sender!r} is not a valid senderId")
        def seconds(name: str, default: str, zero: bool = False) -> float:
            try:
                value = float(env.get(ENV_PREFIX + name, default))
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{name} must be a number") from None
            if not (value >= 0 if zero else value > 0) or value != value:
                raise ConfigError(f"{ENV_PREFIX}{name} must be "
                                  f"{'zero or more' if zero else 'positive'}")
            return value

        return cls(
            table=required("TABLE"),
            destinations_table=required("DESTINATIONS_TABLE"),
            queue_url=required("QUEUE_URL"),
            dead_letter_url=required("DEAD_LETTER_URL"),
            bucket=required("BUCKET"),
            iam_senders=senders,
            signing_secrets=parse_signing_secrets(env.get(ENV_PREFIX + "SIGNING_SECRETS", "")),
            allow_networks=parse_allow_networks(env.get(ENV_PREFIX + "ALLOW_NETWORKS", "")),
            visibility_timeout=seconds("VISIBILITY_TIMEOUT", "900"),
            paused_recheck=seconds("PAUSED_RECHECK", "30"),
            reconcile_grace=seconds("RECONCILE_GRACE", "60", zero=True),
            retry_limits=base.retry_limits,
            destination_rules=base.destination_rules,
        )


_LIMIT_FIELDS = frozenset({"max_attempts", "initial_delay", "max_delay", "max_delay_cap",
                           "timeout", "max_timeout", "retry_after_cap",
                           "destination_concurrency", "breaker_failures", "breaker_cooldown"})
