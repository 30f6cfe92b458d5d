"""Contract v1.1 for operators over real sockets: cancel, replay, and the partner's answer.

The server process on a SQLite file, a real partner on 127.0.0.1; each test keeps to its
own sender.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from notify_relay.api.schemas import MessageOut, ReplayOut
from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import problem
from tests.partner import EXPLAINED, Partner

FAST = {"initialDelaySeconds": 0.2, "maxDelaySeconds": 0.5}


def new_sender() -> str:
    return f"ops-{uuid.uuid4().hex[:8]}"


def submit(api: Api, sender: str, url: str, message_id: str | None = None,
           **fields: Any) -> str:
    mid = message_id or f"m-{uuid.uuid4().hex[:10]}"
    response = api.submit({"messageId": mid, "senderId": sender, "targetUrl": url,
                           "body": {"n": 1}, **fields})
    assert response.status_code == 202, response.text
    return mid


# -- the partner's answer ------------------------------------------------------------


def test_a_refusal_keeps_the_partners_explanation(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/explain/400"))
    view = api.wait_for(mid, {"FAILED"}, senderId=sender)
    MessageOut.model_validate(view)
    (attempt,) = view["attempts"]
    assert attempt["statusCode"] == 400
    assert attempt["response"] == {"headers": {"content-type": "application/json"},
                                   "body": EXPLAINED.decode(), "bodyTruncated": False}


def test_a_redirect_shows_where_it_pointed(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/redirect"))
    view = api.wait_for(mid, {"FAILED"}, senderId=sender)
    response = view["attempts"][0]["response"]
    assert response["headers"]["location"] == partner.url("/ok")
    assert response["body"] == "ok"


def test_a_long_body_is_cut_at_1024_bytes_with_the_cut_character_replaced(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/long"))
    view = api.wait_for(mid, {"DELIVERED"}, senderId=sender)
    response = view["attempts"][0]["response"]
    assert response["bodyTruncated"] is True
    assert response["body"] == "a" * 1023 + "\ufffd"
    assert response["headers"] == {"content-type": "text/plain; charset=utf-8"}


def test_no_answer_is_a_null_response(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, "http://127.0.0.1:9/closed",
                 retryPolicy={"maxAttempts": 1})
    view = api.wait_for(mid, {"FAILED"}, senderId=sender)
    assert view["attempts"][0]["statusCode"] is None
    assert view["attempts"][0]["response"] is None


# -- cancel --------------------------------------------------------------------------


def test_cancel_a_retrying_message_stops_it_and_retry_sends_it_at_once(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    # the first answer is a 503, then the partner is fixed; the retry waits an hour
    mid = submit(api, sender, partner.url(f"/flaky/1/{uuid.uuid4().hex}"),
                 retryPolicy={"initialDelaySeconds": 3600, "maxAttempts": 5})
    api.wait_for(mid, {"RETRYING"}, senderId=sender)
    cancelled = api.cancel(mid, senderId=sender)
    assert cancelled.status_code == 200, cancelled.text
    view = cancelled.json()
    MessageOut.model_validate(view)
    assert view["status"] == "CANCELLED"
    assert view["nextAttemptAt"] is None
    assert view["attemptCount"] == 1
    assert api.get(mid, senderId=sender).json()["status"] == "CANCELLED"
    problem(api.cancel(mid, senderId=sender), 409, "INVALID_STATE")
    # final until retried by hand: then a fresh budget, now, not in an hour
    retried = api.retry(mid, senderId=sender)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "QUEUED"
    view = api.wait_for(mid, {"DELIVERED"}, timeout=10, senderId=sender)
    assert view["attemptCount"] == 2
    assert view["maxAttempts"] == 1 + 5


def test_cancel_a_queued_message_before_its_destination_takes_it(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    path = f"/ok/{uuid.uuid4().hex}"
    destination = f"held-{uuid.uuid4().hex[:6]}"
    paused = api.patch_destination(destination, {"paused": True}, senderId=sender)
    assert paused.status_code == 200, paused.text
    mid = submit(api, sender, partner.url(path), destination=destination)
    assert api.get(mid, senderId=sender).json()["status"] == "QUEUED"
    assert api.cancel(mid, senderId=sender).json()["status"] == "CANCELLED"
    assert api.patch_destination(destination, {"paused": False},
                                 senderId=sender).status_code == 200
    # a sibling submitted after it goes through: the destination works again
    sibling = submit(api, sender, partner.url(path + "/sibling"), destination=destination)
    api.wait_for(sibling, {"DELIVERED"}, senderId=sender)
    assert api.get(mid, senderId=sender).json()["status"] == "CANCELLED"
    assert partner.received(path) == partner.received(path + "/sibling")
    assert len(partner.received(path + "/sibling")) == 1
    listed = api.list(senderId=sender, status="CANCELLED").json()["items"]
    assert [m["messageId"] for m in listed] == [mid]


def test_cancel_refuses_final_messages_and_unknown_ids(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/ok"))
    api.wait_for(mid, {"DELIVERED"}, senderId=sender)
    body = problem(api.cancel(mid, senderId=sender), 409, "INVALID_STATE")
    assert "DELIVERED" in body["detail"]
    problem(api.cancel("no-such-id", senderId=sender), 404, "NOT_FOUND")


def logged(server: ServerProcess, correlation_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The server's first JSON log line with this correlation id, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        for text in server.logs().splitlines():
            if correlation_id in text:
                line: dict[str, Any] = json.loads(text)
                if line.get("correlationId") == correlation_id:
                    return line
        assert time.monotonic() < deadline, server.logs()[-2000:]
        time.sleep(0.05)


def test_cancel_is_logged_with_the_requests_correlation_id(
    api: Api, partner: Partner, server: ServerProcess
) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/status/503"),
                 retryPolicy={"initialDelaySeconds": 3600})
    api.wait_for(mid, {"RETRYING"}, senderId=sender)
    response = api.http.post(f"/v1/messages/{mid}/cancel", params={"senderId": sender},
                             headers={"X-Correlation-Id": "cancel-request-1"})
    assert response.status_code == 200
    line = logged(server, "cancel-request-1")
    assert line["correlationId"] == "cancel-request-1"
    assert (line["message"], line["messageId"]) == ("cancelled", mid)
    assert "messageCorrelationId" in line


# -- replay --------------------------------------------------------------------------


def test_replay_sends_a_destinations_dead_letters_again_in_bounded_steps(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    failed = [submit(api, sender, partner.url("/explain/400"), destination="crm")
              for _ in range(3)]
    other = submit(api, sender, partner.url("/explain/400"), destination="ads")
    for mid in [*failed, other]:
        api.wait_for(mid, {"FAILED"}, senderId=sender)

    first = api.replay({"destination": "crm", "limit": 2}, senderId=sender)
    assert first.status_code == 202, first.text
    ReplayOut.model_validate(first.json())
    assert first.json() == {"replayed": 2, "more": True}
    second = api.replay({"destination": "crm", "limit": 2}, senderId=sender)
    assert second.json()["replayed"] >= 1
    # each replayed message got a second attempt (the partner still refuses it); one the
    # first replay sent and the partner refused again before the second replay is a dead
    # letter of the window again, so the second may send it a third time
    for mid in failed:
        api.wait_until(lambda mid=mid: api.get(mid, senderId=sender).json()["attemptCount"]
                       >= 2, f"{mid} attempted again")
    assert api.get(other, senderId=sender).json()["attemptCount"] == 1
    for mid in failed:
        api.wait_for(mid, {"FAILED"}, senderId=sender)


def test_replay_bounds_by_failure_time(api: Api, partner: Partner) -> None:
    sender = new_sender()
    early = submit(api, sender, partner.url("/explain/400"))
    api.wait_for(early, {"FAILED"}, senderId=sender)
    cut = api.get(early, senderId=sender).json()["updatedAt"]
    time.sleep(0.01)
    late = submit(api, sender, partner.url("/explain/400"))
    api.wait_for(late, {"FAILED"}, senderId=sender)

    before = api.replay({"until": cut}, senderId=sender).json()
    assert before == {"replayed": 0, "more": False}  # `until` is exclusive
    after = api.replay({"since": cut, "limit": 10}, senderId=sender).json()
    assert after == {"replayed": 2, "more": False}
    nothing = api.replay({"since": "2999-01-01T00:00:00Z"}, senderId=sender).json()
    assert nothing == {"replayed": 0, "more": False}
    inverted = api.replay({"since": cut, "until": "2000-01-01T00:00:00Z"}, senderId=sender)
    assert inverted.json() == {"replayed": 0, "more": False}


def test_replay_with_no_body_takes_every_failed_message(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/explain/400"))
    api.wait_for(mid, {"FAILED"}, senderId=sender)
    response = api.replay(None, senderId=sender)
    assert response.status_code == 202, response.text
    assert response.json() == {"replayed": 1, "more": False}


def test_replay_refuses_a_bad_selection(api: Api) -> None:
    sender = new_sender()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"destination": "no spaces"}, "destination"),
        ({"status": "FAILED"}, "status"),
    ]
    for selection, field in cases:
        body = problem(api.replay(selection, senderId=sender), 400, "VALIDATION_ERROR")
        assert [e["field"] for e in body["errors"]] == [field], (selection, body)
    response = api.http.post("/v1/messages/replay", content=b"limit=1",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_a_refused_request_is_logged_with_its_correlation_id(
    api: Api, server: ServerProcess
) -> None:
    response = api.http.post("/v1/messages", json={"messageId": "no target"},
                             headers={"X-Correlation-Id": "refused-request-1"})
    problem(response, 400, "VALIDATION_ERROR")
    line = logged(server, "refused-request-1")
    assert line["message"] == "request refused"
    assert (line["code"], line["path"], line["status"]) == ("VALIDATION_ERROR", "/v1/messages", 400)


# -- retention (contract v1.1) -------------------------------------------------------


def test_retention_deletes_final_messages_past_the_window_and_keeps_the_rest(
    tmp_path: Path, partner: Partner
) -> None:
    # 0.00003 days: 2.6 s, swept every second
    with ServerProcess(tmp_path / "r.db", "--allow-networks", "127.0.0.0/8",
                       "--retention", "0.00003") as server, Api(server.base_url) as api:
        assert api.patch_destination("held", {"paused": True}).status_code == 200
        done = submit(api, "default", partner.url("/ok"))
        waiting = submit(api, "default", partner.url("/ok"), destination="held")
        api.wait_for(done, {"DELIVERED"})
        api.wait_until(lambda: api.get(done).status_code == 404, "the delivered one gone",
                       timeout=15)
        assert api.get(waiting).json()["status"] == "QUEUED"
        # its id may be used again
        assert api.submit({"messageId": done, "targetUrl": partner.url("/ok")}
                          ).status_code == 202
    with ServerProcess(tmp_path / "keep.db", "--allow-networks", "127.0.0.0/8",
                       "--retention", "0") as server, Api(server.base_url) as api:
        kept = submit(api, "default", partner.url("/ok"))
        api.wait_for(kept, {"DELIVERED"})
        time.sleep(1.5)
        assert api.get(kept).status_code == 200
