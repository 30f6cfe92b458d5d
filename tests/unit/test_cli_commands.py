"""The command lines: what parses, what is a usage error (exit 2), what a submission
becomes, and the partner's rules."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from notify_relay.cli import _parser, main
from notify_relay.cli.messages import submission_of
from notify_relay.cli.partner import duration
from notify_relay.cli.partner_server import Behaviour, request_line, signature_check, status_for
from notify_relay.cli.remote import UsageError


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_RELAY_URL", "NOTIFY_RELAY_API_KEY", "NOTIFY_RELAY_SENDER"):
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> dict[str, object]:
    return vars(_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["messages"],
    ["messages", "show"],
    ["messages", "list", "--limit", "0"],
    ["messages", "list", "--status", "LOST"],
    ["messages", "list", "--url", "ftp://relay"],
    ["messages", "list", "--timeout", "-1"],
    ["messages", "submit"],
    ["messages", "submit", "--target", "http://x", "--header", "no colon"],
    ["messages", "submit", "--target", "http://x", "--body", "a", "--json-body", "1"],
    ["messages", "submit", "--target", "http://x", "--json-body", "{not json"],
    ["messages", "replay", "--limit", "10001"],
    ["destinations", "list", "--state", "AJAR"],
    ["destinations", "pause"],
    ["partner", "--fail-rate", "2"],
    ["partner", "--status", "99"],
    ["partner", "--delay", "soon"],
    ["partner", "--secret", "whsec_!!!"],
])
def test_a_bad_command_line_is_exit_2(argv: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_every_command_documents_its_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["messages", "list"], ["messages", "submit"], ["destinations", "pause"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        out = capsys.readouterr().out
        assert "exit status:" in out
        assert "3  the server could not be reached" in out


def test_a_bad_url_in_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NOTIFY_RELAY_URL", "relay:8080")
    assert main(["messages", "list"]) == 2
    assert "NOTIFY_RELAY_URL" in capsys.readouterr().err


def test_a_submission_from_the_options() -> None:
    args = parse("messages", "submit", "--target", "http://partner/hook", "--method", "put",
                 "--header", "X-Tenant: acme", "--header", "Content-Type: application/x+json",
                 "--json-body", '{"a": [1, 2]}', "--id", "order-1", "--destination", "acme",
                 "--max-attempts", "3", "--initial-delay", "0.2", "--attempt-timeout", "5")
    assert submission_of(args) == {
        "messageId": "order-1", "targetUrl": "http://partner/hook", "method": "PUT",
        "headers": {"X-Tenant": "acme", "Content-Type": "application/x+json"},
        "body": {"a": [1, 2]}, "destination": "acme", "timeoutSeconds": 5.0,
        "retryPolicy": {"maxAttempts": 3, "initialDelaySeconds": 0.2},
    }


def test_a_submission_gets_a_new_uuid_and_no_body_unless_told() -> None:
    submission = submission_of(parse("messages", "submit", "--target", "http://p/"))
    assert set(submission) == {"messageId", "targetUrl"}
    assert uuid.UUID(submission["messageId"]).version == 4


def test_a_body_from_a_file(tmp_path: Path) -> None:
    text = tmp_path / "body.txt"
    text.write_text("héllo\n", encoding="utf-8")
    args = parse("messages", "submit", "--target", "http://p/", "--body-file", str(text))
    assert submission_of(args)["body"] == "héllo\n"
    binary = tmp_path / "body.bin"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(UsageError, match="not UTF-8"):
        submission_of(parse("messages", "submit", "--target", "http://p/",
                            "--body-file", str(binary)))
    with pytest.raises(UsageError, match="missing"):
        submission_of(parse("messages", "submit", "--target", "http://p/",
                            "--body-file", str(tmp_path / "missing")))


# the partner

@pytest.mark.parametrize(("path", "behaviour", "draw", "status"), [
    ("/hook", Behaviour(), 0.0, 200),
    ("/status/503", Behaviour(), 0.9, 503),
    ("/status/200", Behaviour(status=500), 0.0, 200),
    ("/status/42", Behaviour(), 0.9, 200),
    ("/status/abc", Behaviour(status=418), 0.9, 418),
    ("/hook", Behaviour(status=410), 0.0, 410),
    ("/hook", Behaviour(fail_rate=0.3), 0.29, 503),
    ("/hook", Behaviour(fail_rate=0.3), 0.3, 200),
    ("/status/201/extra", Behaviour(fail_rate=1.0), 0.0, 201),
])
def test_the_partners_answer(path: str, behaviour: Behaviour, draw: float,
                             status: int) -> None:
    assert status_for(path, behaviour, lambda: draw) == status


@pytest.mark.parametrize(("text", "seconds"), [
    ("2s", 2.0), ("500ms", 0.5), ("1.5", 1.5), ("1m", 60.0), ("0", 0.0)])
def test_delays(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_signatures_are_checked_with_the_secret() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = b'{"a": 1}'
    signed = Webhook(secret).sign("msg_1", datetime.now(UTC), body.decode())
    headers = {"Webhook-Id": "msg_1", "Webhook-Signature": signed,
               "Webhook-Timestamp": str(int(datetime.now(UTC).timestamp()))}
    assert signature_check(secret, body, headers) == "valid"
    assert signature_check(secret, b'{"a": 2}', headers).startswith("INVALID")
    other = "whsec_" + base64.b64encode(b"o" * 24).decode()
    assert signature_check(other, body, headers).startswith("INVALID")
    assert signature_check(secret, body, {"Webhook-Id": "msg_1"}) == "missing"
    assert signature_check(secret, b"\xff", headers).startswith("INVALID")
    garbled = {**headers, "Webhook-Signature": "v1"}
    assert signature_check(secret, body, garbled).startswith("INVALID")


def test_one_line_per_request() -> None:
    line = request_line("POST", "/hook?x=1", {"Content-Type": "text/plain",
                                             "Idempotency-Key": "default:m-1",
                                             "Authorization": "Bearer secret"},
                        b"line 1\nline 2" + b"x" * 300, 503, Behaviour(delay=2), "valid")
    assert "\n" not in line
    fields = line.split("  ")
    assert fields[1:6] == ["POST", "/hook?x=1", "-> 503 after 2s", "content-type=text/plain",
                           "idempotency-key=default:m-1"]
    assert "signature=valid" in fields
    assert "Bearer" not in line
    assert fields[-1].startswith("body=line 1\\nline 2xxx")
    assert fields[-1].endswith("… (313 bytes)")
    assert request_line("GET", "/", {}, b"", 200, Behaviour(), None).endswith("body=(none)")


def test_times_take_units_as_serve_does() -> None:
    import argparse

    from notify_relay.cli.remote import positive

    assert (positive("2h"), positive("30s"), positive("500ms"), positive("5")) == (
        7200.0, 30.0, 0.5, 5.0)
    for bad in ("2x", "-5s", "0", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive(bad)
