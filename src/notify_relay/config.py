"""One typed Settings, read once from flags and NOTIFY_RELAY_* variables (the flag wins).

pydantic-settings reads the variables and pydantic validates every value; a missing or
bad value raises ConfigError at once, in one line naming the flag or the variable it came
from. Times take units (`500ms`, `30s`, `1m`, `2h`, `7d`; a plain number is seconds).
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    JsonValue,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from standardwebhooks import Webhook

from notify_relay.domain.destination import MAX_CONCURRENCY_LIMIT, BreakerConfig, Rules
from notify_relay.domain.network import IPNetwork, parse_networks
from notify_relay.domain.retry import RetryLimits, RetryPolicy
from notify_relay.domain.submission import ID_ALPHABET

ENV_PREFIX = "NOTIFY_RELAY_"
_SENDER = re.compile(rf"{ID_ALPHABET}{{1,64}}")


class ConfigError(ValueError):
    """A setting is missing or invalid."""


# -- parsers of the text forms (each raises ValueError with a message that echoes no secret)

def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        left, sep, right = item.partition("=")
        if not sep or not left or not right:
            raise ConfigError(f"expected {what} pairs separated by commas")
        if any(name == left.strip() for name, _ in pairs):
            raise ConfigError(f"{left.strip()} is given twice")  # a sender or a role: no secret
        pairs.append((left.strip(), right.strip()))
    return pairs


def parse_api_keys(text: str) -> dict[str, str]:
    """`key1=senderA,key2=senderB` -> {key: sender}."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, sender = item.rpartition("=")
        if not sep or not key or not _SENDER.fullmatch(sender):
            raise ConfigError("expected key=senderId pairs separated by commas")
        if key in keys:  # the last one won: a key meant for one sender served another
            raise ConfigError(f"a key is given twice (for {keys[key]} and {sender})")
        keys[key] = sender
    return keys


def parse_signing_secrets(text: str) -> dict[str, str]:
    """`senderA=whsec_...` -> {sender: secret}; each secret is checked by standardwebhooks."""
    secrets = dict(_pairs(text, "senderId=whsec_..."))
    for sender, secret in secrets.items():
        if not _SENDER.fullmatch(sender):
            raise ConfigError(f"{sender!r} is not a valid senderId")
        try:
            Webhook(secret)
        except Exception:
            raise ConfigError(f"the secret for {sender} is not a base64 whsec_ secret"
                              ) from None
    return secrets


def parse_iam_senders(text: str) -> dict[str, str]:
    """`arn:aws:iam::1:role/r=senderA` -> {principal ARN: sender}."""
    senders = dict(_pairs(text, "roleArn=senderId"))
    for sender in senders.values():
        if not _SENDER.fullmatch(sender):
            raise ConfigError(f"{sender!r} is not a valid senderId")
    return senders


def parse_allow_networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(text.split(","))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


_DURATION = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`500ms`, `30s`, `1m` (a minute), `2h`, `2 h`, `7d` or a plain number of seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("expected a duration such as 500ms, 30s, 1m, 2h or 7d "
                         "(a plain number is seconds)")
    return float(match[1]) * _UNIT_SECONDS[(match[2] or "s").lower()]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 7200 -> `2h`, 0.5 -> `500ms`."""
    for unit in ("d", "h", "m", "s"):
        count = seconds / _UNIT_SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


# -- pydantic types of the settings

def _text_or(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    """A validator that parses text and lets already-parsed values through (Settings(...))."""
    def validate(value: Any) -> Any:
        if value is None:
            return parse("")
        return parse(value) if isinstance(value, str) else value

    return validate


def _mapping(parse: Callable[[str], dict[str, str]]) -> Callable[[Any], dict[str, str]]:
    def validate(value: Any) -> dict[str, str]:
        if value is None or isinstance(value, str):
            return parse(value or "")
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        raise ValueError("expected NAME=VALUE pairs")

    return validate


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    if value is None or isinstance(value, str):
        return parse_allow_networks(value or "")
    if isinstance(value, (list, tuple)):
        return tuple(ipaddress.ip_network(item, strict=False) for item in value)
    raise ValueError("expected CIDRs separated by commas")


def _urls(value: Any) -> tuple[str, ...]:
    """One URL, or several separated by commas (the work queue's shards, in shard order)."""
    if isinstance(value, str):
        urls = tuple(url.strip() for url in value.split(","))
    elif isinstance(value, (list, tuple)):
        urls = tuple(str(url).strip() for url in value)
    else:
        raise ValueError("expected URLs separated by commas")
    if not all(urls):
        raise ValueError("expected URLs separated by commas, none empty")
    return urls


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(_text_or(parse_duration)),
                    Field(gt=0, allow_inf_nan=False)]
SecondsOrZero = Annotated[float, BeforeValidator(_text_or(parse_duration)),
                          Field(ge=0, allow_inf_nan=False)]
Pairs = Annotated[Mapping[str, str], NoDecode]
Networks = Annotated[tuple[IPNetwork, ...], NoDecode, PlainValidator(_networks)]
Urls = Annotated[tuple[str, ...], NoDecode, PlainValidator(_urls)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


@dataclass(frozen=True, slots=True)
class PairsFile:
    """A file of `NAME=VALUE` pairs (api keys, signing secrets), read once at start."""

    path: Path
    pairs: Mapping[str, str] = field(repr=False)
    mode: int  # its permission bits

    @property
    def others_can_read(self) -> bool:
        return bool(self.mode & (stat.S_IRGRP | stat.S_IROTH))


def _pairs_file(parse: Callable[[str], dict[str, str]]) -> Callable[[Any], PairsFile | None]:
    """Read a file of pairs: one per line or comma separated, blank lines and # comments."""
    def read(value: Any) -> PairsFile | None:
        if value is None or isinstance(value, PairsFile):
            return value
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            raise ValueError("expected the path of a file")
        path = Path(value)
        try:
            # utf-8-sig: a byte order mark (Windows editors write one) was read into the
            # first key, which then matched no request while the start-up line listed it
            with path.open(encoding="utf-8-sig") as file:
                mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
                lines = file.read().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError("it is not UTF-8 text") from None
        pairs: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    parsed = parse(line)
                    if twice := parsed.keys() & pairs.keys():
                        raise ConfigError(
                            "a key is given twice" if parse is parse_api_keys
                            else f"{min(twice)} is given twice")  # no secret echoed
                except ValueError as exc:
                    raise ValueError(f"line {number}: {exc}") from None
                pairs.update(parsed)
        if not pairs:
            raise ValueError("it holds no NAME=VALUE pairs")
        return PairsFile(path, pairs, mode)

    return read


def _setting(default: Any, help_text: str, metavar: str | None = None,
             **constraints: Any) -> Any:
    extra: dict[str, JsonValue] | None = {"metavar": metavar} if metavar else None
    return Field(default, description=help_text, json_schema_extra=extra, **constraints)


# -- where values come from: keyword arguments (the flags) over the environment

# the variables load() reads: os.environ unless it was given a mapping
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("notify_relay_environ", default=None)


class _Environment(EnvSettingsSource):
    """NOTIFY_RELAY_* variables, from the mapping given to load() (os.environ otherwise)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        environ = os.environ if environ is None else environ
        return {name.lower(): value for name, value in environ.items()
                if not (self.env_ignore_empty and value == "")}


@contextmanager
def _environment(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class _Model(BaseSettings):
    """Keyword arguments (flags) over NOTIFY_RELAY_* variables over the defaults; frozen."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                      frozen=True, extra="forbid", validate_default=False)
    # settings whose values an error message never echoes
    _secret: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(self._describe(exc, given=set(values))) from None
        except SettingsError as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @classmethod
    def _describe(cls, exc: ValidationError, given: set[str]) -> str:
        """One line: each error after the flag (given) or the variable its value came from."""
        parts = []
        for error in exc.errors(include_url=False):
            if error["type"] == "value_error":
                detail = str(error.get("ctx", {}).get("error", error["msg"]))
            else:
                detail = error["msg"]
            loc = error["loc"]
            name = str(loc[0]) if loc else None
            if name is None:
                parts.append(detail)
                continue
            label = flag_name(name) if name in given else env_name(name)
            if error["type"] == "missing":
                parts.append(f"{label} is required")
            elif error["type"] == "extra_forbidden":
                parts.append(f"{name}: no such setting")
            elif name in cls._secret or not isinstance(error["input"], (str, int, float)):
                parts.append(f"{label}: {detail}")
            else:
                parts.append(f"{label}: {error['input']!r}: {detail}")
        return "; ".join(" ".join(part.split()) for part in parts)


_T = TypeVar("_T", bound=_Model)


def _build(model: type[_T], values: Mapping[str, Any],
           environ: Mapping[str, str] | None) -> _T:
    with _environment(environ):
        return model(**values)


def destination_rules(concurrency: int, failures: int, cooldown: float,
                      retry_after_cap: float) -> Rules:
    return Rules(
        default_concurrency=concurrency,
        breaker=BreakerConfig(failures=failures, cooldown=cooldown,
                              max_cooldown=max(cooldown, 600.0)),
        retry_after_cap=retry_after_cap,
    )


class Settings(_Model):
    """The embedded server's settings. Settings(**values) reads os.environ for the rest."""

    _secret: ClassVar[frozenset[str]] = frozenset({"api_keys", "signing_secrets"})

    host: str = _setting("127.0.0.1", "listen address", min_length=1)
    port: int = _setting(8080, "listen port", ge=0, le=65535)
    db: str = _setting("./notify-relay.db", "SQLite file; its directory must exist", "PATH",
                       min_length=1)
    # the *_file settings come first: the inline ones' validators see them
    api_keys_file: Annotated[PairsFile | None, NoDecode,
                             PlainValidator(_pairs_file(parse_api_keys))] = _setting(
        None, "a file of key=senderId pairs, one a line or comma separated; "
        "instead of --api-keys", "PATH")
    api_keys: Pairs = _setting(
        {}, "key1=senderA,key2=senderB; none: no authentication (loopback only)", "PAIRS",
        validate_default=True, repr=False)
    signing_secrets_file: Annotated[PairsFile | None, NoDecode,
                                    PlainValidator(_pairs_file(parse_signing_secrets))] = (
        _setting(None, "a file of senderId=whsec_... pairs; instead of --signing-secrets",
                 "PATH"))
    signing_secrets: Pairs = _setting({}, "senderA=whsec_...,senderB=whsec_...", "PAIRS",
                                      validate_default=True, repr=False)
    allow_networks: Networks = _setting(
        (), "CIDRs that targets may resolve to although private, e.g. 127.0.0.0/8", "CIDRS")
    concurrency: int = _setting(
        256, "attempts in flight at once; those in flight over 1 s (waiting for an "
        "answer, mostly) stop counting, up to as many again", gt=0)
    max_attempts: int = _setting(12, "default attempts per message", gt=0)
    initial_delay: Seconds = _setting(5.0, "default first retry delay", "DURATION")
    max_delay: Seconds = _setting(7200.0, "default longest retry delay", "DURATION")
    max_delay_cap: Seconds = _setting(86400.0, "cap on a request's maxDelaySeconds",
                                      "DURATION")
    timeout: Seconds = _setting(30.0, "default per-attempt timeout", "DURATION")
    max_timeout: Seconds = _setting(120.0, "cap on a request's timeoutSeconds", "DURATION")
    retry_after_cap: Seconds = _setting(3600.0, "cap on a partner's Retry-After", "DURATION")
    deliver_at_cap: Seconds = _setting(30 * 86400.0, "how far ahead a submission's deliverAt "
                                       "may be", "DURATION")
    destination_concurrency: int = _setting(
        64, "attempts in flight per destination unless set on it", ge=1,
        le=MAX_CONCURRENCY_LIMIT)
    breaker_failures: int = _setting(5, "failures in a row that open a destination's breaker",
                                     gt=0)
    breaker_cooldown: Seconds = _setting(
        30.0, "first cool-down of an open breaker; doubles, to 10 min", "DURATION")
    retention: float = _setting(30.0, "days a final message is kept, then deleted with its "
                                "attempts; 0 keeps all", "DAYS", ge=0, le=36500,
                                allow_inf_nan=False)  # 100 years: dates stay in range
    rate_limit: float = _setting(0.0, "submissions per second per sender; 0: unlimited",
                                 ge=0, allow_inf_nan=False)
    rate_burst: float = _setting(100.0, "burst above --rate-limit", gt=0, allow_inf_nan=False)
    shutdown_grace: SecondsOrZero = _setting(
        10.0, "time in-flight attempts get to finish on stop; 0: none", "DURATION")
    head_timeout: Seconds = _setting(10.0, "time a client has to send a request's head",
                                     "DURATION")
    request_timeout: Seconds = _setting(60.0, "time a client has to send a whole request",
                                        "DURATION")
    metrics_need_key: bool = _setting(False, "with --api-keys, /metrics answers only a "
                                      "valid key")
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = _setting(
        "INFO", "DEBUG, INFO, WARNING or ERROR", "LEVEL")
    access_log: bool = _setting(False, "log every HTTP request")
    processes: int = _setting(
        0, "1: the API and delivery in one process; 2: the API in a process of its own, "
        "for a second core; 0: 2 on a machine with two cores or more", ge=0, le=2)

    @field_validator("db")
    @classmethod
    def _directory_exists(cls, db: str) -> str:
        directory = Path(db).parent
        if not directory.is_dir():
            raise ValueError(f"the directory {directory} does not exist")
        return db

    @field_validator("api_keys", mode="plain")
    @classmethod
    def _api_keys(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        return cls._inline_or_file(_mapping(parse_api_keys)(value), info, "api_keys_file")

    @field_validator("signing_secrets", mode="plain")
    @classmethod
    def _signing_secrets(cls, value: Any, info: ValidationInfo) -> dict[str, str]:
        return cls._inline_or_file(_mapping(parse_signing_secrets)(value), info,
                                   "signing_secrets_file")

    @staticmethod
    def _inline_or_file(inline: dict[str, str], info: ValidationInfo,
                        file_field: str) -> dict[str, str]:
        file = info.data.get(file_field)
        if not isinstance(file, PairsFile):
            return inline
        if inline:
            raise ValueError(f"also given in a file ({file_field.replace('_', '-')}): "
                             "give one or the other")
        return dict(file.pairs)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_delay < self.initial_delay:
            raise ValueError("max-delay must not be below initial-delay")
        if self.signing_secrets and not self.api_keys:
            raise ValueError("signing-secrets need api-keys: without keys, anyone who can "
                             "reach the port could have requests signed with a sender's "
                             "secret sent wherever they choose")
        return self

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
    def process_count(self) -> int:
        if self.processes:
            return self.processes
        affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores it may use
        cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
        return 2 if cores >= 2 else 1

    @property
    def loopback_only(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def summary(self) -> dict[str, Any]:
        """The settings in force, for the start-up log: senders, never keys or secrets."""
        return {
            "host": self.host, "port": self.port, "db": self.db,
            "auth": "on" if self.api_keys else "off",
            "keySenders": sorted(set(self.api_keys.values())),
            "apiKeysFile": str(self.api_keys_file.path) if self.api_keys_file else None,
            "signedSenders": sorted(self.signing_secrets),
            "signingSecretsFile": (str(self.signing_secrets_file.path)
                                   if self.signing_secrets_file else None),
            "allowNetworks": [str(network) for network in self.allow_networks],
            "concurrency": self.concurrency,
            "maxAttempts": self.max_attempts,
            "initialDelaySeconds": self.initial_delay,
            "maxDelaySeconds": self.max_delay,
            "maxDelayCapSeconds": self.max_delay_cap,
            "timeoutSeconds": self.timeout,
            "maxTimeoutSeconds": self.max_timeout,
            "retryAfterCapSeconds": self.retry_after_cap,
            "deliverAtCapSeconds": self.deliver_at_cap,
            "retentionDays": self.retention,
            "destinationConcurrency": self.destination_concurrency,
            "breakerFailures": self.breaker_failures,
            "breakerCooldownSeconds": self.breaker_cooldown,
            "rateLimit": self.rate_limit,
            "rateBurst": self.rate_burst,
            "shutdownGraceSeconds": self.shutdown_grace,
            "headTimeoutSeconds": self.head_timeout,
            "requestTimeoutSeconds": self.request_timeout,
            "metricsNeedKey": self.metrics_need_key,
            "accessLog": self.access_log,
            "processes": self.process_count,
            "logLevel": self.log_level,
        }


def _shown(value: Any, metavar: str | None) -> str:
    if metavar == "DURATION" and isinstance(value, float):
        return format_duration(value)
    if value in (None, {}, ()):
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


_METAVARS: dict[Any, str] = {int: "N", float: "NUMBER", str: "TEXT"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag a setting, its help showing the default and the variable."""
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        metavar = extra.get("metavar")
        metavar = metavar if isinstance(metavar, str) else None
        default = None if info.default is PydanticUndefined else info.default
        help_text = (f"{info.description} (default: {_shown(default, metavar)}; "
                     f"env {env_name(name)})").replace("%", "%%")
        if info.annotation is bool:
            help_text = help_text.replace(" (default:", f"; {flag_name(name)} false or "
                                          f"--no-{flag_name(name)[2:]}: off (default:", 1)
            # on/off: `--access-log`, `--no-access-log`; `--access-log false` still works
            parser.add_argument(flag_name(name), dest=name, default=None, nargs="?",
                                const="true", metavar="BOOL", help=help_text)
            parser.add_argument("--no-" + flag_name(name).removeprefix("--"), dest=name,
                                action="store_const", const="false",
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag_name(name), dest=name, default=None,
                                metavar=metavar or _METAVARS.get(info.annotation, "VALUE"),
                                help=help_text)


def load(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (as strings, None when absent) over the environment."""
    return _build(Settings, {name: value for name, value in flags.items() if value is not None},
                  environ)


# NOTIFY_RELAY_* variables read elsewhere: the CLI's HTTP commands (cli/remote.py) and
# scripts/build-lambda
_OTHER_VARIABLES = frozenset({"NOTIFY_RELAY_URL", "NOTIFY_RELAY_API_KEY",
                              "NOTIFY_RELAY_SENDER", "NOTIFY_RELAY_PYTHON313"})


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """NOTIFY_RELAY_* variables that nothing reads, each with the known name it is closest
    to, if any: a misspelt one (NOTIFY_RELAY_CONCURENCY) was ignored without a word, and
    the server ran on the default."""
    known = {env_name(name) for name in (*Settings.model_fields,
                                         *_AwsEnvironment.model_fields)} | _OTHER_VARIABLES
    tails = {name.removeprefix(ENV_PREFIX): name for name in known}
    given = os.environ if environ is None else environ
    unknown = [name for name in sorted(given)  # pydantic-settings ignores the case
               if name.upper().startswith(ENV_PREFIX) and name.upper() not in known]
    return [(name, next((tails[tail] for tail in difflib.get_close_matches(
                 name.upper().removeprefix(ENV_PREFIX), tails, n=1, cutoff=0.75)), None))
            for name in unknown]


# settings of the embedded server that the Lambdas read too
_LIMIT_FIELDS = frozenset({"max_attempts", "initial_delay", "max_delay", "max_delay_cap",
                           "timeout", "max_timeout", "retry_after_cap", "deliver_at_cap",
                           "retention", "destination_concurrency", "breaker_failures",
                           "breaker_cooldown"})


class _AwsEnvironment(_Model):
    """The Lambdas' own variables (the CDK stack sets them)."""

    _secret: ClassVar[frozenset[str]] = frozenset({"signing_secrets"})

    table: str = Field(min_length=1)
    destinations_table: str = Field(min_length=1)
    # the work queue, or its shards comma-separated (a destination's entries stay in one)
    queue_url: Urls
    dead_letter_url: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    iam_senders: Annotated[Pairs, PlainValidator(_mapping(parse_iam_senders))] = {}
    signing_secrets: Annotated[Pairs, PlainValidator(_mapping(parse_signing_secrets))] = {}
    # where the stack keeps them (Secrets Manager); read once per execution environment
    signing_secrets_arn: str | None = None
    allow_networks: Networks = ()
    visibility_timeout: Seconds = 900.0
    paused_recheck: Seconds = 30.0
    reconcile_grace: SecondsOrZero = 60.0


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """The Lambdas' settings, from the environment the CDK stack gives them.

    boto3 reads the region, credentials and (for tests against moto) AWS_ENDPOINT_URL
    itself.
    """

    table: str
    destinations_table: str
    queue_urls: tuple[str, ...]  # the work queue's shards, in order (one: unsharded)
    dead_letter_url: str
    bucket: str
    iam_senders: Mapping[str, str]
    signing_secrets: Mapping[str, str]
    signing_secrets_arn: str | None
    allow_networks: tuple[IPNetwork, ...]
    visibility_timeout: float
    paused_recheck: float  # how long a paused destination's records wait in SQS per hold
    reconcile_grace: float  # a younger message may still be in its API Lambda's hands
    retry_limits: RetryLimits
    destination_rules: Rules
    deliver_at_cap: float
    retention_days: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if environ is None else environ
        aws = _build(_AwsEnvironment, {}, env)
        base = load({}, {name: value for name, value in env.items()
                         if name.upper().removeprefix(ENV_PREFIX).lower() in _LIMIT_FIELDS})
        return cls(
            table=aws.table,
            destinations_table=aws.destinations_table,
            queue_urls=aws.queue_url,
            dead_letter_url=aws.dead_letter_url,
            bucket=aws.bucket,
            iam_senders=dict(aws.iam_senders),
            signing_secrets=dict(aws.signing_secrets),
            signing_secrets_arn=aws.signing_secrets_arn or None,
            allow_networks=aws.allow_networks,
            visibility_timeout=aws.visibility_timeout,
            paused_recheck=aws.paused_recheck,
            reconcile_grace=aws.reconcile_grace,
            retry_limits=base.retry_limits,
            destination_rules=base.destination_rules,
            deliver_at_cap=base.deliver_at_cap,
            retention_days=base.retention,
        )
