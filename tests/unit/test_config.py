"""Settings: flags over NOTIFY_RELAY_* variables over defaults; bad values named at once."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest

from notify_relay.cli import serve
from notify_relay.config import (
    AwsSettings,
    ConfigError,
    Settings,
    format_duration,
    load,
    parse_duration,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_defaults_match_the_contract() -> None:
    settings = load({}, environ={})
    assert (settings.host, settings.port, settings.db) == ("127.0.0.1", 8080, "./notify-relay.db")
    assert settings.api_keys == {}
    assert settings.signing_secrets == {}
    assert settings.allow_networks == ()
    assert settings.loopback_only
    assert (settings.initial_delay, settings.max_delay, settings.shutdown_grace) == (5.0, 7200.0,
                                                                                     10.0)
    assert (settings.access_log, settings.metrics_need_key) == (False, False)
    assert settings.log_level == "INFO"


def test_flag_wins_over_environment() -> None:
    settings = load({"port": "9000"}, environ={"NOTIFY_RELAY_PORT": "9001",
                                               "NOTIFY_RELAY_HOST": "0.0.0.0"})
    assert settings.port == 9000
    assert settings.host == "0.0.0.0"
    assert not settings.loopback_only


def test_absent_flags_and_empty_variables_fall_through() -> None:
    settings = load({"port": None}, environ={"NOTIFY_RELAY_PORT": "9001",
                                             "NOTIFY_RELAY_API_KEYS": ""})
    assert settings.port == 9001
    assert settings.api_keys == {}


def test_keyword_arguments_are_flags() -> None:
    settings = Settings(port=1234, max_delay=60.0, api_keys={"k": "senderA"})
    assert (settings.port, settings.max_delay, settings.api_keys) == (1234, 60.0, {"k": "senderA"})
    with pytest.raises(ConfigError, match="--port"):
        Settings(port=-1)


def test_pairs_parsed() -> None:
    settings = load({"api_keys": "k1=senderA, k=2=senderB",
                     "signing_secrets": f"senderA={SECRET}",
                     "allow_networks": "127.0.0.0/8,::1/128"}, environ={})
    assert settings.api_keys == {"k1": "senderA", "k=2": "senderB"}
    assert settings.signing_secrets == {"senderA": SECRET}
    assert settings.allow_networks == (ipaddress.ip_network("127.0.0.0/8"),
                                       ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ("30s", 30.0), ("500ms", 0.5), ("1m", 60.0), ("2h", 7200.0),
     ("2 h", 7200.0), ("7d", 604800.0), (" 1.5H ", 5400.0), ("0", 0.0)],
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "1e3", "nan", "inf", "2 hours", "--1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(7200.0, "2h"), (86400.0, "1d"), (30.0, "30s"),
                                               (120.0, "2m"), (0.5, "500ms"), (0.0, "0s"),
                                               (90.5, "90.5s")])
def test_durations_shown_as_they_are_read(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_every_time_setting_takes_units() -> None:
    settings = load({"max_delay": "2h", "initial_delay": "500ms", "timeout": "1m",
                     "max_delay_cap": "7d", "breaker_cooldown": "45s", "shutdown_grace": "0",
                     "head_timeout": "2s", "request_timeout": "1m", "max_timeout": "3m",
                     "retry_after_cap": "1h"}, environ={"NOTIFY_RELAY_MAX_DELAY": "1h"})
    assert (settings.max_delay, settings.initial_delay, settings.timeout) == (7200.0, 0.5, 60.0)
    assert (settings.max_delay_cap, settings.breaker_cooldown) == (604800.0, 45.0)
    assert settings.shutdown_grace == 0.0
    assert (settings.head_timeout, settings.request_timeout) == (2.0, 60.0)
    assert (settings.max_timeout, settings.retry_after_cap) == (180.0, 3600.0)
    assert load({}, environ={"NOTIFY_RELAY_MAX_DELAY": "3 h"}).max_delay == 10800.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"port": "http"}, "--port"),
        ({"port": "70000"}, "--port"),
        ({"host": ""}, "--host"),
        ({"api_keys": "no-sender"}, "--api-keys"),
        ({"api_keys": "k=bad sender"}, "--api-keys"),
        ({"signing_secrets": "senderA=not-base64!"}, "--signing-secrets"),
        ({"allow_networks": "10.0.0.0/33"}, "--allow-networks"),
        ({"concurrency": "0"}, "--concurrency"),
        ({"max_attempts": "many"}, "--max-attempts"),
        ({"initial_delay": "10", "max_delay": "5"}, "max-delay must not be below initial-delay"),
        ({"max_delay": "2x"}, "--max-delay: '2x': expected a duration"),
        ({"timeout": "0"}, "--timeout"),
        ({"access_log": "maybe"}, "--access-log"),
        ({"metrics_need_key": "maybe"}, "--metrics-need-key"),
        ({"signing_secrets": f"senderA={SECRET}"}, "signing-secrets need api-keys"),
        ({"destination_concurrency": "0"}, "--destination-concurrency"),
        ({"destination_concurrency": "1001"}, "--destination-concurrency"),
        ({"breaker_failures": "0"}, "--breaker-failures"),
        ({"head_timeout": "-1"}, "--head-timeout"),
        ({"rate_limit": "-1"}, "--rate-limit"),
        ({"rate_burst": "0"}, "--rate-burst"),
        ({"shutdown_grace": "-5"}, "--shutdown-grace"),
        ({"log_level": "foo"}, "--log-level: 'FOO': Input should be 'DEBUG', 'INFO', 'WARNING' "
                               "or 'ERROR'"),
        ({"db": "/nonexistent/dir/x.db"}, "--db: .*the directory /nonexistent/dir does not exist"),
        ({"retention_days": "3"}, "retention_days: no such setting"),
        ({"retention": "1e308"}, "--retention"),  # crashed at start, or every sweep failed
        ({"retention": "1000000"}, "--retention"),
    ],
)
def test_bad_values_are_named(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(flags, environ={})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "abc"), ("LOG_LEVEL", "loud"), ("ACCESS_LOG", "maybe"), ("MAX_DELAY", "2 weeks"),
     ("RATE_LIMIT", "-1"), ("API_KEYS", "nonsense"), ("DB", "/nonexistent/dir/x.db")],
)
def test_bad_variables_are_named_as_variables(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load({}, environ={f"NOTIFY_RELAY_{variable}": value})
    assert str(info.value).startswith(f"NOTIFY_RELAY_{variable}: ")
    assert "--" not in str(info.value).split(":")[0]


def test_zero_means_off_where_it_should() -> None:
    settings = load({"rate_limit": "0", "shutdown_grace": "0"}, environ={})
    assert (settings.rate_limit, settings.shutdown_grace) == (0.0, 0.0)


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("yes", True),
                                             ("false", False), ("0", False), ("no", False)])
def test_switch_variables_take_words(text: str, value: bool) -> None:
    settings = load({}, environ={"NOTIFY_RELAY_ACCESS_LOG": text,
                                 "NOTIFY_RELAY_METRICS_NEED_KEY": text})
    assert (settings.access_log, settings.metrics_need_key) == (value, value)


def test_secrets_never_echoed_in_errors() -> None:
    for flags in ({"api_keys": "supersecretkey"}, {"signing_secrets": "a=supersecretkey"}):
        with pytest.raises(ConfigError) as info:
            load(flags, environ={})
        assert "supersecretkey" not in str(info.value)


def test_secrets_not_in_repr() -> None:
    settings = load({"api_keys": "supersecretkey=senderA",
                     "signing_secrets": f"senderA={SECRET}"}, environ={})
    assert "supersecretkey" not in repr(settings)
    assert SECRET not in repr(settings)


def test_retry_limits_from_settings() -> None:
    limits = load({"max_attempts": "4", "initial_delay": "2", "max_delay": "1m",
                   "timeout": "10", "retry_after_cap": "2m"}, environ={}).retry_limits
    assert (limits.default_policy.max_attempts, limits.default_policy.initial_delay,
            limits.default_policy.max_delay) == (4, 2.0, 60.0)
    assert (limits.default_timeout, limits.retry_after_cap) == (10.0, 120.0)


def test_destination_rules_from_settings() -> None:
    rules = load({"destination_concurrency": "8", "breaker_failures": "3",
                  "breaker_cooldown": "1m"}, environ={}).destination_rules
    assert rules.default_concurrency == 8
    assert (rules.breaker.failures, rules.breaker.cooldown, rules.breaker.max_cooldown) == (
        3, 60.0, 600.0)


# -- the files of keys and secrets

def write(path: Path, text: str, mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_api_keys_from_a_file(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys", "# the partners\nk1=senderA\n\n  k2=senderB, k=3=senderC\n"
                                    "   # an indented comment\n")
    for settings in (load({"api_keys_file": keys}, environ={}),
                     load({}, environ={"NOTIFY_RELAY_API_KEYS_FILE": keys})):
        assert settings.api_keys == {"k1": "senderA", "k2": "senderB", "k=3": "senderC"}
        assert settings.api_keys_file is not None
        assert not settings.api_keys_file.others_can_read


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    """Written by some editors; it was read into the first key, which then matched no
    request (401) while the start-up line listed its sender."""
    keys = tmp_path / "keys"
    keys.write_bytes("\ufeffk1=senderA\nk2=senderB\n".encode())
    keys.chmod(0o600)
    assert load({"api_keys_file": str(keys)}, environ={}).api_keys == {
        "k1": "senderA", "k2": "senderB"}


def test_a_sender_given_twice_a_secret_is_refused(tmp_path: Path) -> None:
    secrets = write(tmp_path / "secrets", f"senderA={SECRET}\nsenderA={SECRET}\n")
    with pytest.raises(ConfigError, match="line 2: senderA is given twice") as info:
        load({"signing_secrets_file": secrets, "api_keys": "k=senderA"}, environ={})
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="senderA is given twice"):
        load({"signing_secrets": f"senderA={SECRET},senderA={SECRET}",
              "api_keys": "k=senderA"}, environ={})


def test_signing_secrets_from_a_file(tmp_path: Path) -> None:
    secrets = write(tmp_path / "secrets", f"senderA={SECRET}\n")
    settings = load({"signing_secrets_file": secrets, "api_keys": "k=senderA"}, environ={})
    assert settings.signing_secrets == {"senderA": SECRET}
    with pytest.raises(ConfigError, match="signing-secrets need api-keys"):
        load({"signing_secrets_file": secrets}, environ={})


def test_a_file_readable_by_others_is_noticed(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys", "k1=senderA\n", mode=0o644)
    settings = load({"api_keys_file": keys}, environ={})
    assert settings.api_keys_file is not None
    assert settings.api_keys_file.others_can_read


def test_inline_and_file_forms_together_are_refused(tmp_path: Path) -> None:
    keys = write(tmp_path / "keys", "k1=senderA\n")
    with pytest.raises(ConfigError, match="--api-keys: also given in a file"):
        load({"api_keys_file": keys, "api_keys": "k2=senderB"}, environ={})
    with pytest.raises(ConfigError, match="NOTIFY_RELAY_API_KEYS: also given in a file"):
        load({"api_keys_file": keys}, environ={"NOTIFY_RELAY_API_KEYS": "k2=senderB"})
    secrets = write(tmp_path / "secrets", f"senderA={SECRET}\n")
    with pytest.raises(ConfigError, match="--signing-secrets: also given in a file"):
        load({"api_keys": "k=senderA", "signing_secrets_file": secrets,
              "signing_secrets": f"senderA={SECRET}"}, environ={})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing", None, "cannot read it: No such file or directory"),
        ("empty", "# nothing yet\n", "holds no NAME=VALUE pairs"),
        ("bad", "k1=senderA\nsupersecretkey\n", "line 2: expected key=senderId pairs"),
        # the last one won, silently: a key meant for one sender served another
        ("twice", "supersecretkey=senderA\nsupersecretkey=senderB\n",
         "line 2: a key is given twice"),
        ("twice-inline", "supersecretkey=senderA, supersecretkey=senderB\n",
         "line 1: a key is given twice"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        write(path, text)
    with pytest.raises(ConfigError, match=f"^--api-keys-file: .*{message}") as info:
        load({"api_keys_file": str(path)}, environ={})
    assert "supersecretkey" not in str(info.value)
    with pytest.raises(ConfigError, match=f"^NOTIFY_RELAY_API_KEYS_FILE: .*{message}"):
        load({}, environ={"NOTIFY_RELAY_API_KEYS_FILE": str(path)})


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--signing-secrets-file: .*cannot read it"):
        load({"signing_secrets_file": str(tmp_path)}, environ={})


# -- the start-up summary and the command line

def test_summary_names_senders_never_keys_or_secrets() -> None:
    settings = load({"api_keys": "supersecretkey=senderA,other=senderB",
                     "signing_secrets": f"senderA={SECRET}", "allow_networks": "10.0.0.0/8",
                     "max_delay": "1h", "rate_limit": "5"}, environ={})
    summary = settings.summary()
    assert summary["auth"] == "on"
    assert summary["keySenders"] == ["senderA", "senderB"]
    assert summary["signedSenders"] == ["senderA"]
    assert summary["allowNetworks"] == ["10.0.0.0/8"]
    assert (summary["maxAttempts"], summary["initialDelaySeconds"],
            summary["maxDelaySeconds"]) == (12, 5.0, 3600.0)
    assert (summary["timeoutSeconds"], summary["destinationConcurrency"],
            summary["breakerFailures"], summary["breakerCooldownSeconds"]) == (30.0, 64, 5, 30.0)
    assert (summary["rateLimit"], summary["logLevel"]) == (5.0, "INFO")
    assert "supersecretkey" not in str(summary)
    assert SECRET not in str(summary)
    assert load({}, environ={}).summary()["auth"] == "off"


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notify-relay")
    commands = parser.add_subparsers(dest="command")
    serve.register(commands)
    parsed: argparse.ArgumentParser = commands.choices["serve"]
    return parsed


def flags_of(*argv: str) -> dict[str, str | None]:
    return {k: v for k, v in vars(serve_parser().parse_args(argv)).items() if k != "run"}


def test_help_shows_each_default_and_variable() -> None:
    text = " ".join(serve_parser().format_help().split())
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"env NOTIFY_RELAY_{name.upper()})" in text
    for shown in ("(default: 127.0.0.1;", "(default: 8080;", "(default: ./notify-relay.db;",
                  "(default: 2h; env NOTIFY_RELAY_MAX_DELAY)", "(default: 5s;",
                  "(default: off; env NOTIFY_RELAY_ACCESS_LOG)", "(default: INFO;",
                  "(default: none; env NOTIFY_RELAY_API_KEYS)"):
        assert shown in text


def test_switches_need_no_argument() -> None:
    assert load(flags_of("--access-log", "--metrics-need-key"), environ={}).access_log
    assert load(flags_of("--metrics-need-key"), environ={}).metrics_need_key
    off = load(flags_of("--no-access-log"), environ={"NOTIFY_RELAY_ACCESS_LOG": "true"})
    assert not off.access_log
    assert load(flags_of("--access-log", "false"), environ={}).access_log is False
    assert load(flags_of(), environ={"NOTIFY_RELAY_ACCESS_LOG": "yes"}).access_log


def test_command_line_flags_reach_settings() -> None:
    settings = load(flags_of("--max-delay", "2h", "--port", "9000", "--log-level", "debug"),
                    environ={"NOTIFY_RELAY_PORT": "1", "NOTIFY_RELAY_MAX_ATTEMPTS": "3"})
    assert (settings.max_delay, settings.port, settings.max_attempts) == (7200.0, 9000, 3)
    assert settings.log_level == "DEBUG"


# -- the Lambdas

AWS_ENV = {"NOTIFY_RELAY_TABLE": "t", "NOTIFY_RELAY_DESTINATIONS_TABLE": "dt",
           "NOTIFY_RELAY_QUEUE_URL": "q", "NOTIFY_RELAY_DEAD_LETTER_URL": "d",
           "NOTIFY_RELAY_BUCKET": "b"}


def test_aws_settings_require_their_resources() -> None:
    with pytest.raises(ConfigError, match="NOTIFY_RELAY_TABLE is required"):
        AwsSettings.from_env({})
    settings = AwsSettings.from_env({
        **AWS_ENV,
        "NOTIFY_RELAY_IAM_SENDERS": "arn:aws:iam::1:role/r=orders",
        "NOTIFY_RELAY_MAX_ATTEMPTS": "5",
        "NOTIFY_RELAY_PORT": "not read by the Lambdas"})
    assert settings.iam_senders == {"arn:aws:iam::1:role/r": "orders"}
    assert settings.retry_limits.default_policy.max_attempts == 5
    assert settings.destinations_table == "dt"
    assert (settings.visibility_timeout, settings.paused_recheck,
            settings.reconcile_grace) == (900.0, 30.0, 60.0)


def test_aws_settings_take_durations_and_name_bad_variables() -> None:
    settings = AwsSettings.from_env({**AWS_ENV, "NOTIFY_RELAY_VISIBILITY_TIMEOUT": "15m",
                                     "NOTIFY_RELAY_RECONCILE_GRACE": "0",
                                     "NOTIFY_RELAY_MAX_DELAY": "1h"})
    assert (settings.visibility_timeout, settings.reconcile_grace) == (900.0, 0.0)
    assert settings.retry_limits.default_policy.max_delay == 3600.0
    for name, value in (("PAUSED_RECHECK", "0"), ("RECONCILE_GRACE", "-1"),
                        ("IAM_SENDERS", "role=bad sender"), ("BREAKER_FAILURES", "x")):
        with pytest.raises(ConfigError, match=f"^NOTIFY_RELAY_{name}: "):
            AwsSettings.from_env({**AWS_ENV, f"NOTIFY_RELAY_{name}": value})


def test_processes_default_to_two_where_there_are_two_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert load({}, environ={}).process_count == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert load({}, environ={}).process_count == 1
    assert load({"processes": "2"}, environ={}).process_count == 2  # asked: even on one core
    assert load({}, environ={"NOTIFY_RELAY_PROCESSES": "1"}).process_count == 1
    assert load({}, environ={}).summary()["processes"] == 1


def test_processes_beyond_two_are_refused() -> None:
    with pytest.raises(ConfigError, match="--processes"):
        load({"processes": "3"}, environ={})


def test_unknown_variables_are_found_with_the_closest_known_name() -> None:
    from notify_relay.config import unknown_variables

    assert unknown_variables({
        "NOTIFY_RELAY_PORT": "1", "NOTIFY_RELAY_QUEUE_URL": "q",  # a setting, a Lambda's
        "NOTIFY_RELAY_SENDER": "s", "notify_relay_retention": "1",  # the CLI's; any case
        "NOTIFY_RELAY_RETRY_AFTER": "1", "notify_relay_prot": "1", "NOTIFY_RELAY_X": "1",
        "OTHER": "1",
    }) == [("NOTIFY_RELAY_RETRY_AFTER", "NOTIFY_RELAY_RETRY_AFTER_CAP"),
           ("NOTIFY_RELAY_X", None), ("notify_relay_prot", "NOTIFY_RELAY_PORT")]
