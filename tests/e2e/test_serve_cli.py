"""`notify-relay serve` as a process: configuration errors and a file of API keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, ServerProcess

pytestmark = pytest.mark.e2e

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def serve(*flags: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_RELAY_")}
    env.update({f"NOTIFY_RELAY_{name}": value for name, value in variables.items()})
    return subprocess.run([sys.executable, "-m", "notify_relay.cli", "serve", *flags],
                          capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.mark.parametrize(
    ("flags", "variables", "start"),
    [
        (("--port", "x"), {}, "--port: 'x'"),
        ((), {"PORT": "abc"}, "NOTIFY_RELAY_PORT: 'abc'"),
        (("--log-level", "foo"), {}, "--log-level: 'FOO': Input should be 'DEBUG', 'INFO'"),
        (("--shutdown-grace", "-5"), {}, "--shutdown-grace: '-5'"),
        (("--db", "/nonexistent/dir/x.db"), {},
         "--db: '/nonexistent/dir/x.db': the directory /nonexistent/dir does not exist"),
        (("--api-keys-file", "/nonexistent/keys"), {}, "--api-keys-file: '/nonexistent/keys': "
                                                       "cannot read it"),
        (("--signing-secrets", f"a={SECRET}"), {}, "signing-secrets need api-keys"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(flags: tuple[str, ...], variables: dict[str, str],
                                              start: str) -> None:
    result = serve(*flags, **variables)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"notify-relay: error: {start}")
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr
    assert result.stdout == ""


def test_keys_from_a_file_are_accepted(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# partners\nfile-key-a=team-a\nfile-key-b=team-b\n")
    keys.chmod(0o640)
    with ServerProcess(tmp_path / "relay.db", "--api-keys-file", str(keys),
                       "--max-delay", "1h", "--access-log") as server:
        with Api(server.base_url, key="file-key-b") as api:
            assert api.list().status_code == 200
        with Api(server.base_url, key="wrong") as api:
            assert api.list().status_code == 401
        assert server.terminate() == 0
    entries = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    starting = next(e for e in entries if e["message"] == "starting")
    assert starting["auth"] == "on"
    assert starting["keySenders"] == ["team-a", "team-b"]
    assert starting["maxDelaySeconds"] == 3600.0
    assert starting["accessLog"] is True
    assert "file-key" not in json.dumps(starting)
    loose = next(e for e in entries if "readable by group or others" in e["message"])
    assert (loose["setting"], loose["mode"]) == ("api-keys-file", "0640")


def test_a_misspelt_variable_is_named_in_a_warning_not_its_value(tmp_path: Path) -> None:
    """It was ignored without a word, and the server ran on the default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_RELAY_")}
    env.update({"NOTIFY_RELAY_CONCURENCY": "7", "NOTIFY_RELAY_API_KEYS_FIEL": "k-secret=a",
                "NOTIFY_RELAY_URL": "http://127.0.0.1:1"})  # the CLI's: no warning
    proc = subprocess.Popen([sys.executable, "-m", "notify_relay.cli", "serve", "--port", "0",
                             "--db", str(tmp_path / "relay.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1]["message"] == "starting":
                break
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, rest
    warned = {line["variable"]: line["didYouMean"] for line in lines
              if line["message"].startswith("an environment variable that no setting reads")}
    assert warned == {"NOTIFY_RELAY_API_KEYS_FIEL": "NOTIFY_RELAY_API_KEYS_FILE",
                      "NOTIFY_RELAY_CONCURENCY": "NOTIFY_RELAY_CONCURRENCY"}
    assert "k-secret" not in json.dumps(lines) + rest
