"""API keys scope every read and write to the key's sender; signing per sender."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import new_id, problem
from tests.partner import Partner

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("auth") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8",
                       "--api-keys", "key-a=team-a,key-b=team-b",
                       "--signing-secrets", f"team-a={SECRET}") as running:
        yield running


@pytest.fixture
def team_a(server: ServerProcess) -> Iterator[Api]:
    client = Api(server.base_url, key="key-a")
    yield client
    client.close()


@pytest.fixture
def team_b(server: ServerProcess) -> Iterator[Api]:
    client = Api(server.base_url, key="key-b")
    yield client
    client.close()


def test_no_key_or_bad_key_is_401(server: ServerProcess, partner: Partner) -> None:
    message = {"messageId": new_id(), "targetUrl": partner.url("/ok")}
    for key in (None, "wrong"):
        api = Api(server.base_url, key=key)
        refused = [api.submit(message), api.get("anything"), api.list(), api.retry("anything"),
                   api.http.post("/v1/messages/batch", json={"messages": [message]}),
                   api.http.get("/v1/destinations")]
        for response in refused:
            problem(response, 401, "UNAUTHENTICATED")
            # RFC 9110: a 401 names the scheme it would take
            assert response.headers["WWW-Authenticate"].startswith("Bearer "), response.url
        api.close()
    basic = Api(server.base_url)
    problem(basic.http.post("/v1/messages", json=message,
                            headers={"Authorization": "Basic key-a"}), 401, "UNAUTHENTICATED")
    basic.close()


def test_unauthenticated_before_validation(server: ServerProcess) -> None:
    anonymous = Api(server.base_url)
    problem(anonymous.submit({"nonsense": True}), 401, "UNAUTHENTICATED")
    anonymous.close()


def test_body_sender_must_match_key(team_a: Api, partner: Partner) -> None:
    message = {"messageId": new_id(), "senderId": "team-b", "targetUrl": partner.url("/ok")}
    problem(team_a.submit(message), 403, "FORBIDDEN")
    problem(team_a.list(senderId="team-b"), 403, "FORBIDDEN")
    assert team_a.submit({**message, "senderId": "team-a"}).status_code == 202


def test_each_sender_sees_only_its_own(team_a: Api, team_b: Api, partner: Partner) -> None:
    mid = new_id()
    accepted = team_a.submit({"messageId": mid, "targetUrl": partner.url("/ok")})
    assert accepted.json()["senderId"] == "team-a"
    team_a.wait_for(mid, {"DELIVERED"})
    problem(team_b.get(mid), 404, "NOT_FOUND")
    problem(team_b.retry(mid), 404, "NOT_FOUND")
    assert mid not in [m["messageId"] for m in team_b.list().json()["items"]]
    assert mid in [m["messageId"] for m in team_a.list().json()["items"]]
    # the same id is a new message for another sender, not a conflict
    assert team_b.submit({"messageId": mid, "targetUrl": partner.url("/ok"),
                          "body": "other"}).status_code == 202


def test_signed_for_the_sender_with_a_secret(team_a: Api, team_b: Api, partner: Partner) -> None:
    signed, unsigned = new_id(), new_id()
    team_a.submit({"messageId": signed, "targetUrl": partner.url("/ok?a"),
                   "body": {"amount": 12.5}})
    team_b.submit({"messageId": unsigned, "targetUrl": partner.url("/ok?b"), "body": "x"})
    team_a.wait_for(signed, {"DELIVERED"})
    team_b.wait_for(unsigned, {"DELIVERED"})
    by_path = {r.path: r for r in partner.received()}
    got = by_path["/ok?a"]
    assert Webhook(SECRET).verify(got.body, got.headers) == {"amount": 12.5}
    tampered = dict(got.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(got.body + b" ", tampered)
    assert by_path["/ok?b"].header("webhook-signature") is None


def test_a_senders_own_signature_headers(team_a: Api, team_b: Api, partner: Partner) -> None:
    """Without a secret the sender's webhook-* headers go as stored (it may sign its own
    requests; they were dropped); with one, the server's signature replaces them."""
    own = {"webhook-id": "mine", "Webhook-Timestamp": "1", "webhook-signature": "v1,abc"}
    signed, unsigned = new_id(), new_id()
    team_a.submit({"messageId": signed, "targetUrl": partner.url("/own?a"),
                   "headers": own, "body": {"n": 1}})
    team_b.submit({"messageId": unsigned, "targetUrl": partner.url("/own?b"),
                   "headers": own, "body": {"n": 2}})
    team_a.wait_for(signed, {"DELIVERED"})
    team_b.wait_for(unsigned, {"DELIVERED"})
    by_path = {r.path: r for r in partner.received("/own")}
    as_sent = by_path["/own?b"]
    assert [(k.lower(), v) for k, v in as_sent.headers.items()
            if k.lower().startswith("webhook-")] == [(k.lower(), v) for k, v in own.items()]
    replaced = by_path["/own?a"]
    assert [k.lower() for k in replaced.headers if k.lower().startswith("webhook-")] == [
        "webhook-id", "webhook-timestamp", "webhook-signature"]
    assert Webhook(SECRET).verify(replaced.body, replaced.headers) == {"n": 1}


def test_keys_and_secrets_never_logged(server: ServerProcess, team_a: Api,
                                       partner: Partner) -> None:
    mid = new_id()
    team_a.submit({"messageId": mid, "targetUrl": partner.url("/ok"),
                   "headers": {"X-Api-Key": "partner-credential-42"}})
    body = team_a.wait_for(mid, {"DELIVERED"})
    assert body["headers"] == {"X-Api-Key": "[REDACTED]"}
    logs = server.logs()
    for secret in ("key-a", "key-b", SECRET, "partner-credential-42"):
        assert secret not in logs
    assert mid in logs


def test_with_keys_the_key_decides_not_the_host(team_a: Api, partner: Partner) -> None:
    """Behind a proxy or on a real name, a server with keys answers any Host and Origin."""
    response = team_a.submit({"messageId": new_id(), "targetUrl": partner.url("/ok")},
                             headers={"Host": "relay.internal.example",
                                      "Origin": "https://console.internal.example"})
    assert response.status_code == 202


def test_metrics_open_by_default_and_behind_a_key_when_asked(server: ServerProcess,
                                                             tmp_path: Path) -> None:
    assert httpx.get(server.base_url + "/metrics").status_code == 200
    with ServerProcess(tmp_path / "m.db", "--api-keys", "key-a=team-a",
                       "--metrics-need-key", "true") as guarded:
        problem(httpx.get(guarded.base_url + "/metrics"), 401, "UNAUTHENTICATED")
        keyed = httpx.get(guarded.base_url + "/metrics",
                          headers={"Authorization": "Bearer key-a"})
        assert keyed.status_code == 200
        assert "notify_relay_submissions" in keyed.text
