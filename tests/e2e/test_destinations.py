"""Destinations over real sockets: the server process, real partners on 127.0.0.1.

One partner hanging or failing must not hold back another; caps, pauses and Retry-After
hold only their own destination, and waiting spends no attempt.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_relay.api.schemas import DestinationOut, DestinationPageOut
from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import problem
from tests.partner import Partner

FAST = {"initialDelaySeconds": 0.2, "maxDelaySeconds": 0.5}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small pools, so that one destination could fill them all without the rules."""
    db = tmp_path_factory.mktemp("destinations") / "relay.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8", "--concurrency", "8",
                       "--destination-concurrency", "4", "--breaker-failures", "3",
                       "--breaker-cooldown", "5", "--shutdown-grace", "1") as running:
        yield running


@pytest.fixture
def other_partner() -> Iterator[Partner]:
    with Partner() as running:
        yield running


def dest_name(partner: Partner) -> str:
    return f"127.0.0.1:{partner.port}"


def submit_many(api: Api, bodies: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        for response in pool.map(api.submit, bodies):
            assert response.status_code == 202, response.text


def test_a_hanging_partner_does_not_hold_back_a_healthy_one(
    api: Api, partner: Partner, other_partner: Partner
) -> None:
    hanging = [{"messageId": new_id("hang"), "targetUrl": other_partner.url("/slow/12"),
                "timeoutSeconds": 10} for _ in range(20)]
    submit_many(api, hanging)
    api.wait_until(lambda: len(other_partner.received("/slow")) >= 4, "the hanging partner's "
                   "first attempts")
    started = time.monotonic()
    healthy = [{"messageId": new_id("ok"), "targetUrl": partner.url("/ok")} for _ in range(60)]
    submit_many(api, healthy)
    for body in healthy:
        api.wait_for(body["messageId"], {"DELIVERED"}, timeout=10)
    took = time.monotonic() - started
    assert took < 9  # before a single hanging attempt times out (10 s)

    # the hanging partner got its cap (4 of the server's 8), never more
    assert other_partner.max_in_progress["slow"] == 4
    assert len(other_partner.received("/slow")) == 4
    view = api.destination(dest_name(other_partner)).json()
    DestinationOut.model_validate(view)
    assert view["inFlight"] == 4
    assert view["pending"] == 20
    assert view["maxConcurrency"] == 4
    waiting = api.get(hanging[-1]["messageId"]).json()
    assert waiting["status"] == "QUEUED"
    assert waiting["attemptCount"] == 0
    assert waiting["destination"] == dest_name(other_partner)


def test_breaker_opens_sends_nothing_while_cooling_then_a_probe_closes_it(
    api: Api, server: ServerProcess, partner: Partner
) -> None:
    switch = new_id("sw")
    partner.failing.add(switch)
    name = new_id("breaker")
    ids = [new_id("b") for _ in range(12)]
    submit_many(api, [{"messageId": mid, "targetUrl": partner.url(f"/switch/{switch}"),
                       "destination": name, "retryPolicy": FAST} for mid in ids])
    api.wait_until(lambda: api.destination(name).json()["state"] == "OPEN", "breaker open")
    time.sleep(0.3)  # what was in flight when it opened has arrived by now
    sent_when_open = len(partner.received(f"/switch/{switch}"))
    # three failures in a row, and at most cap - 1 = 3 attempts already in flight then
    assert 3 <= sent_when_open <= 6
    view = api.destination(name).json()
    assert view["consecutiveFailures"] >= 3
    assert view["lastError"] == "HTTP 503"
    assert view["nextProbeAt"] is not None

    time.sleep(1.0)  # still within the cool-down (5 s, less up to 20 % jitter): nothing sent
    assert len(partner.received(f"/switch/{switch}")) == sent_when_open
    untouched = [m for mid in ids if (m := api.get(mid).json())["attemptCount"] == 0]
    assert len(untouched) >= 6  # they wait without spending an attempt
    assert all(m["nextAttemptAt"] == view["nextProbeAt"] for m in untouched)

    partner.failing.discard(switch)  # the partner is back: the next probe closes it
    for mid in ids:
        api.wait_for(mid, {"DELIVERED"}, timeout=20)
    assert api.destination(name).json()["state"] == "CLOSED"
    for m in untouched:
        assert api.get(m["messageId"]).json()["attemptCount"] == 1
    # one attempt per message, plus the failures before the breaker opened and the probes
    assert len(partner.received(f"/switch/{switch}")) <= len(ids) + sent_when_open + 2
    logs = server.logs()
    assert "breaker opened" in logs
    assert "breaker closed" in logs
    assert name in logs


def test_max_concurrency_is_what_the_partner_sees(api: Api, other_partner: Partner) -> None:
    name = dest_name(other_partner)
    changed = api.patch_destination(name, {"maxConcurrency": 2})
    assert changed.status_code == 200, changed.text
    assert changed.json()["maxConcurrency"] == 2
    ids = [new_id("cap") for _ in range(12)]
    submit_many(api, [{"messageId": mid, "targetUrl": other_partner.url("/slow/0.15")}
                      for mid in ids])
    for mid in ids:
        api.wait_for(mid, {"DELIVERED"}, timeout=20)
    assert other_partner.max_in_progress["slow"] == 2


def test_pause_and_resume(api: Api, partner: Partner) -> None:
    name = new_id("paused")
    assert api.patch_destination(name, {"paused": True}).status_code == 200
    ids = [new_id("p") for _ in range(5)]
    submit_many(api, [{"messageId": mid, "targetUrl": partner.url(f"/ok?{name}"),
                       "destination": name} for mid in ids])
    time.sleep(0.5)
    assert partner.received(f"/ok?{name}") == []
    view = api.destination(name).json()
    assert view["paused"] is True
    assert view["pending"] == 5
    message = api.get(ids[0]).json()
    assert (message["status"], message["attemptCount"], message["nextAttemptAt"]) == (
        "QUEUED", 0, None)

    resumed = api.patch_destination(name, {"paused": False})
    assert resumed.json()["paused"] is False
    for mid in ids:
        api.wait_for(mid, {"DELIVERED"}, timeout=10)
    assert len(partner.received(f"/ok?{name}")) == 5


def test_a_rate_of_almost_nothing_lets_one_start_then_holds_the_rest(
        api: Api, partner: Partner) -> None:
    """Any rate above 0 is the contract's: 1e-12/s once made every start fail, in a loop
    (its next start was past what a date can hold) and no message was ever attempted."""
    name = new_id("trickle")
    assert api.patch_destination(name, {"ratePerSecond": 1e-12}).status_code == 200
    ids = [new_id("m") for _ in range(3)]
    submit_many(api, [{"messageId": mid, "targetUrl": partner.url(f"/ok?{name}"),
                       "destination": name} for mid in ids])

    def statuses() -> list[str]:
        return sorted(api.get(mid).json()["status"] for mid in ids)

    api.wait_until(lambda: statuses() == ["DELIVERED", "QUEUED", "QUEUED"],
                   "one delivered, two held")
    held = [mid for mid in ids if api.get(mid).json()["status"] == "QUEUED"]
    # a century on, once the owner has written the destination's state (every second)
    api.wait_until(lambda: (api.get(held[0]).json()["nextAttemptAt"] or "") > "2120",
                   "the held message shows when the rate lets it go")
    assert api.get(held[0]).json()["attemptCount"] == 0
    assert api.cancel(held[0]).json()["status"] == "CANCELLED"
    # a sensible rate set over the mistake lets the rest go, not a century later
    assert api.patch_destination(name, {"ratePerSecond": 10}).status_code == 200
    api.wait_for(held[1], {"DELIVERED"}, timeout=10)
    assert len(partner.received(f"/ok?{name}")) == 2


def test_retry_after_holds_the_whole_destination(api: Api, partner: Partner) -> None:
    name = new_id("held")
    first = new_id("first")
    assert api.submit({"messageId": first, "targetUrl": partner.url(f"/retry-after/2?{name}"),
                       "destination": name}).status_code == 202
    api.wait_until(lambda: api.destination(name).json()["heldUntil"] is not None,
                   "the 429 recorded")
    told_at = partner.received(f"/retry-after/2?{name}")[0].at
    others = [new_id("later") for _ in range(3)]
    submit_many(api, [{"messageId": mid, "targetUrl": partner.url(f"/ok?{name}"),
                       "destination": name} for mid in others])
    for mid in others:
        api.wait_for(mid, {"DELIVERED"}, timeout=10)
    assert all(r.at >= told_at + 1.9 for r in partner.received(f"/ok?{name}"))
    api.wait_for(first, {"DELIVERED"}, timeout=10)


def test_destinations_list_filter_paging_and_errors(api: Api, partner: Partner) -> None:
    sender = new_id("lister")
    names = sorted(new_id("d") for _ in range(3))
    for name in names:
        assert api.patch_destination(name, {"ratePerSecond": 5}, senderId=sender
                                     ).status_code == 200
    seen: list[str] = []
    for page in api.pages(api.destinations, senderId=sender, limit=2):
        DestinationPageOut.model_validate(page)
        assert len(page["items"]) <= 2
        seen += [d["destination"] for d in page["items"]]
    assert seen == names
    assert api.destinations(senderId=sender, state="OPEN").json()["items"] == []
    closed = api.destinations(senderId=sender, state="CLOSED").json()["items"]
    assert [d["ratePerSecond"] for d in closed] == [5, 5, 5]
    # another sender does not see them
    assert api.destinations(senderId=new_id("other")).json()["items"] == []
    assert api.destination(names[0], senderId=new_id("other")).status_code == 404

    problem(api.destination("nowhere.example:443", senderId=sender), 404, "NOT_FOUND")
    problem(api.patch_destination(names[0], {"maxConcurrency": 0}, senderId=sender),
            400, "VALIDATION_ERROR")
    problem(api.patch_destination(names[0], {"maxConcurrency": 1001}, senderId=sender),
            400, "VALIDATION_ERROR")
    problem(api.patch_destination(names[0], {"ratePerSecond": -1}, senderId=sender),
            400, "VALIDATION_ERROR")
    problem(api.patch_destination(names[0], {"speed": 3}, senderId=sender),
            400, "VALIDATION_ERROR")
    problem(api.patch_destination("bad name!", {"paused": True}), 400, "VALIDATION_ERROR")
    problem(api.destinations(state="SIDEWAYS"), 400, "VALIDATION_ERROR")
    problem(api.destinations(cursor="garbage!"), 400, "VALIDATION_ERROR")
    # a forged cursor, base64 of the JSON text "\ud800" (a lone surrogate): it was a 500
    problem(api.destinations(cursor="Ilx1ZDgwMCI"), 400, "VALIDATION_ERROR")
    # null restores the server default
    restored = api.patch_destination(names[0], {"ratePerSecond": None, "maxConcurrency": None},
                                     senderId=sender).json()
    assert (restored["ratePerSecond"], restored["maxConcurrency"]) == (None, 4)


def test_submission_destination_is_validated_and_shown(api: Api, partner: Partner) -> None:
    problem(api.submit({"messageId": new_id("v"), "targetUrl": partner.url("/ok"),
                        "destination": "has space"}), 400, "VALIDATION_ERROR")
    problem(api.submit({"messageId": new_id("v"), "targetUrl": partner.url("/ok"),
                        "destination": "x" * 129}), 400, "VALIDATION_ERROR")
    mid = new_id("custom")
    assert api.submit({"messageId": mid, "targetUrl": partner.url("/ok"),
                       "destination": "CRM-[eu]:main@v2"}).status_code == 202
    assert api.wait_for(mid, {"DELIVERED"})["destination"] == "CRM-[eu]:main@v2"
    listed = api.list(limit=5).json()["items"]
    assert all("destination" in m for m in listed)


def test_a_long_dns_hosts_default_destination_can_be_read_and_changed(api: Api) -> None:
    """A legal host of 143 characters named a destination of 147 that GET and PATCH
    refused (400, pattern): its sender could not see, pause or limit it."""
    sender = new_id("long")
    host = f"{'a' * 63}.{'b' * 63}.example.com"
    name = f"{host}:443"
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    mid = new_id("long")
    # held an hour: no attempt, so no lookup of a name that resolves nowhere
    assert api.submit({"messageId": mid, "senderId": sender,
                       "targetUrl": f"https://{host}/hook", "deliverAt": later}
                      ).status_code == 202
    assert api.get(mid, senderId=sender).json()["destination"] == name
    found = api.destination(name, senderId=sender)
    assert found.status_code == 200, found.text
    assert (DestinationOut.model_validate(found.json()).destination, found.json()["pending"]
            ) == (name, 1)
    patched = api.patch_destination(name, {"paused": True, "ratePerSecond": 2},
                                    senderId=sender)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["paused"], patched.json()["ratePerSecond"]) == (True, 2)
    assert [d["destination"] for d in api.destinations(senderId=sender).json()["items"]
            ] == [name]
    assert api.replay({"destination": name}, senderId=sender).json() == {
        "replayed": 0, "more": False}
    # the longest a default name can be (253 and the root's dot, a 5-digit port); no longer
    longest = f"{'c' * 63}.{'d' * 63}.{'e' * 63}.{'f' * 61}.:65535"
    assert api.patch_destination(longest, {"paused": True}, senderId=sender
                                 ).status_code == 200
    problem(api.destination(longest + "5", senderId=sender), 400, "VALIDATION_ERROR")
    # a sender's own name keeps to the contract's 1-128
    body = problem(api.submit({"messageId": new_id("long"), "senderId": sender,
                               "targetUrl": f"https://{host}/hook", "destination": name}),
                   400, "VALIDATION_ERROR")
    assert [e["field"] for e in body["errors"]] == ["destination"]


@pytest.mark.parametrize("host", ["exa%6dple.com", "ex!ample.com", "a..example.com",
                                  f"{'a' * 64}.example.com", "[fe80::1%25eth0]"])
def test_a_host_no_destination_could_be_named_for_is_refused_at_submission(
    api: Api, host: str
) -> None:
    """Such hosts were accepted (202) and named destinations outside the name rules; none
    of them can be delivered to either. A batch answers each in its place."""
    url = f"https://{host}/hook"
    body = problem(api.submit({"messageId": new_id("bad"), "targetUrl": url}),
                   400, "VALIDATION_ERROR")
    assert [e["field"] for e in body["errors"]] == ["targetUrl"], body
    batch = api.http.post("/v1/messages/batch", json={"messages": [
        {"messageId": new_id("bad"), "targetUrl": url},
        {"messageId": new_id("bad"), "targetUrl": "https://x.example/",
         "callbackUrl": url}]})
    assert batch.status_code == 200, batch.text
    answers = batch.json()["items"]
    assert [(a["httpStatus"], a["code"], [e["field"] for e in a["errors"]])
            for a in answers] == [(400, "VALIDATION_ERROR", ["targetUrl"]),
                                  (400, "VALIDATION_ERROR", ["callbackUrl"])]


def metric(api: Api, line_start: str) -> float:
    for line in api.http.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_transitions_and_blocked_destinations(api: Api, partner: Partner) -> None:
    opened = 'notify_relay_breaker_transitions_total{from_state="CLOSED",to_state="OPEN"}'
    paused = 'notify_relay_destinations_blocked{reason="PAUSED"}'
    opened_before, paused_before = metric(api, opened), metric(api, paused)
    name = new_id("metrics")
    submit_many(api, [{"messageId": new_id("mx"), "targetUrl": partner.url("/status/503"),
                       "destination": name, "retryPolicy": FAST} for _ in range(3)])
    api.wait_until(lambda: api.destination(name).json()["state"] == "OPEN", "breaker open")
    # the API shows the new state as soon as it is in the gate's cache; the worker counts
    # the transition only after the state's write and the slot's release (Gate.finish)
    api.wait_until(lambda: metric(api, opened) > opened_before, "the transition counted")
    assert metric(api, opened) == opened_before + 1
    assert metric(api, 'notify_relay_destinations{state="OPEN"}') >= 1
    assert api.patch_destination(name, {"paused": True}).status_code == 200
    assert metric(api, paused) == paused_before + 1


def test_settings_survive_a_restart(tmp_path: Path, partner: Partner) -> None:
    db = tmp_path / "restart.db"
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8") as first:
        api = Api(first.base_url)
        assert api.patch_destination("kept", {"paused": True, "maxConcurrency": 3}
                                     ).status_code == 200
        api.close()
    with ServerProcess(db, "--allow-networks", "127.0.0.0/8") as second:
        api = Api(second.base_url)
        view = api.destination("kept").json()
        api.close()
    assert (view["paused"], view["maxConcurrency"]) == (True, 3)
