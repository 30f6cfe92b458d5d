"""`notify-relay messages ...` and `destinations ...` against a real server process, with
`notify-relay partner` as the partner: what each command prints and its exit status.

The commands run in this process (`main([...])`, output captured); one runs as its own
process, to check the entry point's exit status. Each test keeps apart by its own
destination or sender.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from notify_relay.cli import main
from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_cli_partner import PartnerProcess
from tests.sockets import free_port

# retries quick enough for a test, slow enough to be seen waiting
FAST = ("--initial-delay", "0.2", "--max-delay", "0.5")


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def rows(self) -> list[list[str]]:
        """A table's data rows, split on the two-space column gaps."""
        return [[cell.strip() for cell in line.split("  ") if cell.strip()]
                for line in self.out.splitlines()[1:]]


Cli = Callable[..., Result]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def relay_partner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartnerProcess]:
    """Launched, not yet waited for: it starts while the server does (see `cli`)."""
    partner = PartnerProcess(tmp_path_factory.mktemp("cli") / "partner.log")
    with partner.launch():
        yield partner


@pytest.fixture
def cli(relay_partner: PartnerProcess, server: ServerProcess,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    relay_partner.ready()
    for name in ("NOTIFY_RELAY_URL", "NOTIFY_RELAY_API_KEY", "NOTIFY_RELAY_SENDER"):
        monkeypatch.delenv(name, raising=False)
    return runner(server.base_url, capsys)


def runner(url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        status = main([*argv, "--url", url])
        out, err = capsys.readouterr()
        return Result(status, out, err)
    return run


def test_submit_then_delivered_then_list_and_show(
    cli: Cli, api: Api, relay_partner: PartnerProcess
) -> None:
    destination = new_id("cli-ok")
    submitted = cli("messages", "submit", "--target", relay_partner.url("/hook"),
                    "--json-body", '{"order": 1}', "--header", "X-Tenant: acme",
                    "--destination", destination)
    assert submitted.status == 0, submitted.err
    message_id = submitted.out.strip()
    assert uuid.UUID(message_id).version == 4
    api.wait_for(message_id, {"DELIVERED"})
    line = relay_partner.wait_for_line(f"idempotency-key=default:{message_id}")
    assert "POST  /hook  -> 200" in line
    assert line.endswith('body={"order":1}')

    listed = cli("messages", "list", "--limit", "500")
    assert listed.status == 0
    assert listed.out.splitlines()[0].split() == ["ID", "STATUS", "ATTEMPTS", "DESTINATION",
                                                  "UPDATED", "LAST", "ERROR"]
    row = next(r for r in listed.rows() if r[0] == message_id)
    assert row[1:4] == ["DELIVERED", "1", destination]
    assert row[-1] == "-"

    shown = cli("messages", "show", message_id)
    assert shown.status == 0
    assert "status:           DELIVERED" in shown.out
    assert f"destination:      {destination}" in shown.out
    assert f"target:           POST {relay_partner.url('/hook')}" in shown.out
    assert "X-Tenant: acme" in shown.out
    attempts = shown.out.split("\n\n")[1].splitlines()
    assert attempts[0].split() == ["#", "STARTED", "DURATION", "STATUS", "OUTCOME", "ERROR"]
    assert attempts[1].split()[0] == "1"
    assert attempts[1].split()[-3:] == ["200", "SUCCESS", "-"]


def test_show_prints_the_partners_answer(cli: Cli, api: Api,
                                         relay_partner: PartnerProcess) -> None:
    message_id = new_id("cli-answer")
    cli("messages", "submit", "--target", relay_partner.url("/status/400"), "--id", message_id,
        "--body", "hello", "--destination", new_id("cli-answer"))
    api.wait_for(message_id, {"FAILED"})
    shown = cli("messages", "show", message_id)
    assert "partner's answers:" in shown.out
    assert "attempt 1: 400 (content-type: application/json; charset=utf-8)" in shown.out
    assert '  | {"status": 400, "ok": false, "receivedBytes": 5}' in shown.out


def test_a_failed_message_is_retried_by_hand(cli: Cli, api: Api,
                                             relay_partner: PartnerProcess) -> None:
    message_id = new_id("cli-400")
    assert cli("messages", "submit", "--target", relay_partner.url("/status/400"), "--id",
               message_id, "--destination", new_id("cli-400")).out == f"{message_id}\n"
    failed = api.wait_for(message_id, {"FAILED"})
    assert failed["lastError"] == "HTTP 400"

    listed = cli("messages", "list", "--status", "failed", "--limit", "500")
    assert next(r for r in listed.rows() if r[0] == message_id)[1:3] == ["FAILED", "1"]
    shown = cli("messages", "show", message_id)
    assert shown.out.split("\n\n")[1].splitlines()[1].split()[-4:] == [
        "400", "GIVE_UP", "HTTP", "400"]

    retried = cli("messages", "retry", message_id)
    assert retried.status == 0, retried.err
    assert retried.out.startswith(f"{message_id}: QUEUED")
    again = api.wait_for(message_id, {"FAILED"}, timeout=10)
    assert again["attemptCount"] == 2

    # a repeat of the same id is a duplicate: nothing new
    repeat = cli("messages", "submit", "--target", relay_partner.url("/status/400"), "--id",
                 message_id)
    assert repeat.status == 0
    assert repeat.out == f"{message_id}\n"
    assert "already accepted" in repeat.err


def test_the_retry_policy_options_reach_the_server(cli: Cli, api: Api,
                                                   relay_partner: PartnerProcess) -> None:
    message_id = new_id("cli-503")
    cli("messages", "submit", "--target", relay_partner.url("/status/503"), "--id", message_id,
        "--destination", new_id("cli-503"), "--max-attempts", "2", *FAST)
    api.wait_for(message_id, {"FAILED"})
    shown = cli("messages", "show", message_id)
    assert "attempts:         2 of at most 2" in shown.out
    attempts = shown.out.split("\n\n")[1].splitlines()[1:]
    assert [a.split()[-4:-2] for a in attempts] == [["503", "RETRY"], ["503", "GIVE_UP"]]


def test_a_message_waiting_for_a_retry_is_cancelled(cli: Cli, api: Api,
                                                    relay_partner: PartnerProcess) -> None:
    message_id = new_id("cli-cancel")
    cli("messages", "submit", "--target", relay_partner.url("/status/503"), "--id", message_id,
        "--destination", new_id("cli-cancel"), "--initial-delay", "30", "--max-attempts", "5")
    api.wait_for(message_id, {"RETRYING"})

    cancelled = cli("messages", "cancel", message_id)
    assert cancelled.status == 0, cancelled.err
    assert cancelled.out == f"{message_id}: CANCELLED\n"
    view = cli("messages", "show", message_id, "--json").json()
    assert view["status"] == "CANCELLED"
    assert view["attemptCount"] == 1

    refused = cli("messages", "cancel", message_id)
    assert refused.status == 1
    assert refused.err.startswith("notify-relay: error: INVALID_STATE: ")
    assert "(correlation id " in refused.err


def test_replay_by_destination(cli: Cli, api: Api, relay_partner: PartnerProcess) -> None:
    chosen, other = new_id("cli-replay"), new_id("cli-other")
    ids = {name: [new_id("r") for _ in range(2)] for name in (chosen, other)}
    for name, message_ids in ids.items():
        for message_id in message_ids:
            cli("messages", "submit", "--target", relay_partner.url("/status/410"), "--id",
                message_id, "--destination", name)
    for message_id in [*ids[chosen], *ids[other]]:
        api.wait_for(message_id, {"FAILED"})

    replayed = cli("messages", "replay", "--destination", chosen)
    assert replayed.status == 0, replayed.err
    assert replayed.out == "replayed 2 messages\n"
    for message_id in ids[chosen]:
        api.wait_until(lambda m=message_id: api.get(m).json()["attemptCount"] == 2,
                       f"{message_id} attempted again")
        api.wait_for(message_id, {"FAILED"})
    for message_id in ids[other]:
        assert api.get(message_id).json()["attemptCount"] == 1

    as_json = cli("messages", "replay", "--destination", chosen, "--limit", "1", "--json")
    assert as_json.json() == {"replayed": 1, "more": True}


def test_a_paused_destination_holds_its_messages_until_resumed(
    cli: Cli, api: Api, relay_partner: PartnerProcess
) -> None:
    destination = new_id("cli-pause")
    paused = cli("destinations", "pause", destination)
    assert paused.status == 0, paused.err
    assert paused.out.startswith(f"{destination}: paused")
    message_id = new_id("held")
    cli("messages", "submit", "--target", relay_partner.url("/hook"), "--id", message_id,
        "--destination", destination)
    time.sleep(0.5)
    held = api.get(message_id).json()
    assert (held["status"], held["attemptCount"]) == ("QUEUED", 0)

    shown = cli("destinations", "show", destination)
    assert "paused:               yes" in shown.out
    assert "pending:              1" in shown.out
    listed = cli("destinations", "list", "--all")
    row = next(r for r in listed.rows() if r[0] == destination)
    assert row[1:5] == ["CLOSED", "yes", "0", "1"]

    resumed = cli("destinations", "resume", destination)
    assert resumed.out.startswith(f"{destination}: resumed")
    api.wait_for(message_id, {"DELIVERED"})
    assert cli("destinations", "show", destination, "--json").json()["paused"] is False


def test_json_output_is_the_apis(cli: Cli, api: Api, relay_partner: PartnerProcess) -> None:
    sender = new_id("json")
    submitted = cli("messages", "submit", "--target", relay_partner.url("/hook"), "--sender",
                    sender, "--json")
    accepted = submitted.json()
    assert accepted["senderId"] == sender
    assert (accepted["status"], accepted["duplicate"]) == ("QUEUED", False)
    api.wait_for(accepted["messageId"], {"DELIVERED"}, senderId=sender)

    page = cli("messages", "list", "--sender", sender, "--json").json()
    assert [m["messageId"] for m in page["items"]] == [accepted["messageId"]]
    assert page["nextCursor"] is None
    view = cli("messages", "show", accepted["messageId"], "--sender", sender, "--json").json()
    assert view["attempts"][0]["outcome"] == "SUCCESS"
    destinations = cli("destinations", "list", "--sender", sender, "--json").json()
    assert [d["destination"] for d in destinations["items"]] == [f"127.0.0.1:{relay_partner.port}"]


def test_list_pages_to_its_limit_or_to_the_end(cli: Cli, relay_partner: PartnerProcess) -> None:
    sender = new_id("pages")
    ids = [cli("messages", "submit", "--target", relay_partner.url("/hook"), "--sender", sender,
               "--destination", sender).out.strip() for _ in range(3)]
    assert all(ids)
    two = cli("messages", "list", "--sender", sender, "--limit", "2")
    assert len(two.rows()) == 2
    assert {r[0] for r in two.rows()} < set(ids)
    assert "more messages: --all" in two.err
    every = cli("messages", "list", "--sender", sender, "--all")
    assert sorted(r[0] for r in every.rows()) == sorted(ids)
    assert every.err == ""
    none = cli("messages", "list", "--sender", sender, "--status", "FAILED")
    assert (none.status, none.out, none.err) == (0, "", "no messages\n")


def test_the_server_refusing_is_exit_1(cli: Cli) -> None:
    missing = cli("messages", "show", "no-such-message")
    assert missing.status == 1
    assert missing.out == ""
    assert missing.err.startswith("notify-relay: error: NOT_FOUND: ")
    assert missing.err.count("\n") == 1
    assert cli("destinations", "show", "no-such-destination").status == 1
    invalid = cli("messages", "submit", "--target", "http://10.0.0.1/x", "--id", "bad id!")
    assert invalid.status == 1
    assert invalid.err.startswith("notify-relay: error: VALIDATION_ERROR: ")
    assert "safe" not in invalid.err


def test_no_server_is_exit_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_RELAY_")}
    env["NOTIFY_RELAY_URL"] = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "notify_relay.cli", "messages", "submit",
                           "--target", "http://example.com/", "--id", "m-1", "--timeout", "2"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"notify-relay: error: UNREACHABLE: cannot reach {env['NOTIFY_RELAY_URL']}: "
        "[Errno 111] Connection refused",
        "notify-relay: submitting again with --id m-1 is safe",
    ]


# a server with API keys and a signing secret

SECRET = "whsec_" + base64.b64encode(b"cli-e2e-signing-key-0123").decode()


@pytest.fixture(scope="module")
def signed_partner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartnerProcess]:
    partner = PartnerProcess(tmp_path_factory.mktemp("cli-signed") / "partner.log",
                             "--secret", SECRET)
    with partner.launch():
        yield partner


@pytest.fixture(scope="module")
def keyed(signed_partner: PartnerProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with keys; its partner starts at the same time and checks signatures."""
    db = tmp_path_factory.mktemp("cli-keys") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8", "--api-keys",
                       "key-a=team-a,key-b=team-b", "--signing-secrets",
                       f"team-a={SECRET}") as running:
        yield running


def test_keys_and_signatures(keyed: ServerProcess, signed_partner: PartnerProcess,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_RELAY_URL", "NOTIFY_RELAY_SENDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTIFY_RELAY_API_KEY", "key-b")
    run = runner(keyed.base_url, capsys)
    partner = signed_partner.ready()
    submitted = run("messages", "submit", "--target", partner.url("/signed"),
                    "--json-body", '{"n": 1}', "--api-key", "key-a")
    assert submitted.status == 0, submitted.err
    message_id = submitted.out.strip()
    with Api(keyed.base_url, key="key-a") as api:
        api.wait_for(message_id, {"DELIVERED"})
    assert "signature=valid" in partner.wait_for_line(f"team-a:{message_id}")

    # the key from the environment: team-b's, which neither sees team-a's message
    # nor may speak for team-a
    assert run("messages", "list", "--json").json()["items"] == []
    other = run("messages", "show", message_id)
    assert (other.status, other.err.split(":")[2]) == (1, " NOT_FOUND")
    forbidden = run("messages", "list", "--sender", "team-a")
    assert forbidden.status == 1
    assert forbidden.err.startswith("notify-relay: error: FORBIDDEN: ")

    monkeypatch.delenv("NOTIFY_RELAY_API_KEY")
    anonymous = run("messages", "list")
    assert anonymous.status == 1
    assert anonymous.err.startswith("notify-relay: error: UNAUTHENTICATED: ")
    wrong = run("destinations", "list", "--api-key", "not-a-key")
    assert wrong.status == 1


def test_submit_and_retry_wait_for_the_outcome(
    cli: Cli, relay_partner: PartnerProcess
) -> None:
    delivered = cli("messages", "submit", "--target", relay_partner.url("/hook"),
                    "--id", new_id("wait-ok"), "--wait", "10")
    assert delivered.status == 0, delivered.err
    assert delivered.out.strip().endswith(": DELIVERED (attempt 1: HTTP 200)")
    refused_id = new_id("wait-refused")
    refused = cli("messages", "submit", "--target", relay_partner.url("/status/422"),
                  "--id", refused_id, "--wait", "10")
    assert (refused.status, refused.out.strip()) == (0, f"{refused_id}: FAILED "
                                                         "(attempt 1: HTTP 422)")
    again = cli("messages", "retry", refused_id, "--wait", "10", "--json")
    assert again.status == 0, again.err
    view = again.json()
    assert (view["status"], view["attemptCount"]) == ("FAILED", 2)
    # no outcome in time (its destination is paused): exit 3, and where to look
    paused = new_id("wait-paused")
    assert cli("destinations", "pause", paused).status == 0
    held_id = new_id("wait-held")
    held = cli("messages", "submit", "--target", relay_partner.url("/hook"),
               "--destination", paused, "--id", held_id, "--wait", "0.5")
    assert held.status == 3
    assert f"{held_id}: no outcome within 0.5 s" in held.err
    assert f"notify-relay messages show {held_id}" in held.err
