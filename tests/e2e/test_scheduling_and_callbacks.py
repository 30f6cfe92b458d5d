"""Contract v1.1 for senders over real sockets: deliverAt and outcome callbacks.

The server process on a SQLite file, a real partner on 127.0.0.1 that also takes the
callbacks; each test keeps to its own sender.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from notify_relay.api.schemas import MessageOut
from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import problem
from tests.partner import Partner


def new_sender() -> str:
    return f"snd-{uuid.uuid4().hex[:8]}"


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def submit(api: Api, sender: str, url: str, **fields: Any) -> str:
    mid = fields.pop("messageId", None) or f"m-{uuid.uuid4().hex[:10]}"
    response = api.submit({"messageId": mid, "senderId": sender, "targetUrl": url,
                           "body": {"n": 1}, **fields})
    assert response.status_code == 202, response.text
    return mid


# -- deliverAt -------------------------------------------------------------------------


def test_deliver_at_holds_the_first_attempt_until_then(api: Api, partner: Partner) -> None:
    sender = new_sender()
    path = f"/ok/{uuid.uuid4().hex}"
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    mid = submit(api, sender, partner.url(path), deliverAt=rfc3339(at))
    view = api.get(mid, senderId=sender).json()
    assert (view["status"], view["nextAttemptAt"]) == ("QUEUED", rfc3339(at))
    time.sleep(0.5)
    assert partner.received(path) == []
    api.wait_for(mid, {"DELIVERED"}, senderId=sender)
    assert len(partner.received(path)) == 1
    started = datetime.fromisoformat(
        api.get(mid, senderId=sender).json()["attempts"][0]["startedAt"])
    assert started >= at


def test_deliver_at_in_the_past_means_now(api: Api, partner: Partner) -> None:
    sender = new_sender()
    mid = submit(api, sender, partner.url("/ok"), deliverAt="2020-01-01T00:00:00Z")
    api.wait_for(mid, {"DELIVERED"}, senderId=sender)


def test_deliver_at_beyond_the_cap_or_malformed_is_refused(api: Api, partner: Partner) -> None:
    sender = new_sender()
    far = rfc3339(datetime.now(UTC) + timedelta(days=31))
    for value in (far, "tomorrow", "2026-13-01T00:00:00Z"):
        body = problem(api.submit({"messageId": "late", "senderId": sender,
                                   "targetUrl": partner.url("/ok"), "deliverAt": value}),
                       400, "VALIDATION_ERROR")
        assert [e["field"] for e in body["errors"]] == ["deliverAt"], body
    assert api.get("late", senderId=sender).status_code == 404


def test_a_scheduled_message_can_be_cancelled_before_its_time(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    path = f"/ok/{uuid.uuid4().hex}"
    at = rfc3339(datetime.now(UTC) + timedelta(seconds=1))
    mid = submit(api, sender, partner.url(path), deliverAt=at)
    assert api.cancel(mid, senderId=sender).json()["status"] == "CANCELLED"
    time.sleep(1.5)
    assert partner.received(path) == []


# -- callbacks -------------------------------------------------------------------------


def notices(partner: Partner, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in partner.received(path)]


def test_a_delivered_message_tells_its_callback(api: Api, partner: Partner) -> None:
    sender = new_sender()
    hook = f"/callbacks/{uuid.uuid4().hex}"
    mid = submit(api, sender, partner.url("/ok"), callbackUrl=partner.url(hook))
    api.wait_until(lambda: len(partner.received(hook)) == 1, "the notice")
    (request,) = partner.received(hook)
    body = json.loads(request.body)
    view = api.get(mid, senderId=sender).json()
    assert body == {"type": "message.delivered", "messageId": mid, "senderId": sender,
                    "status": "DELIVERED", "attemptCount": 1, "lastStatusCode": 200,
                    "lastError": None, "deliveredAt": view["deliveredAt"],
                    "correlationId": view["correlationId"]}
    assert request.method == "POST"
    assert request.header("Idempotency-Key") == f"{sender}:{mid}:callback:1"
    assert request.header("Content-Type") == "application/json"
    api.wait_until(lambda: (api.get(mid, senderId=sender).json()["callback"] or {}).get(
        "status") == "DELIVERED", "the notice recorded as delivered")
    view = api.get(mid, senderId=sender).json()
    MessageOut.model_validate(view)
    assert view["callback"] == {"status": "DELIVERED", "attemptCount": 1, "lastError": None}
    assert view["callbackUrl"] == partner.url(hook)
    # the notice is the relay's own: not listed, not readable, not the sender's to change
    listed = api.list(senderId=sender).json()["items"]
    assert [m["messageId"] for m in listed] == [mid]
    notice_id = f"{mid}~callback~1"
    assert api.get(notice_id, senderId=sender).status_code == 404
    assert api.retry(notice_id, senderId=sender).status_code == 404
    assert api.cancel(notice_id, senderId=sender).status_code == 404
    counts = api.http.get("/console/api/counts", params={"senderId": sender}).json()
    assert sum(counts["counts"].values()) == 1, counts
    console = api.http.get("/console/api/messages", params={"senderId": sender}).json()
    assert [m["messageId"] for m in console["items"]] == [mid]


def test_a_failed_message_tells_its_callback_again_after_each_retry_by_hand(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    hook = f"/callbacks/{uuid.uuid4().hex}"
    mid = submit(api, sender, partner.url("/explain/400"), callbackUrl=partner.url(hook))
    api.wait_until(lambda: len(partner.received(hook)) == 1, "the first notice")
    assert notices(partner, hook)[0]["type"] == "message.failed"
    assert notices(partner, hook)[0]["lastStatusCode"] == 400
    assert api.retry(mid, senderId=sender).status_code == 202
    api.wait_until(lambda: len(partner.received(hook)) == 2, "the second notice")
    second = partner.received(hook)[1]
    assert json.loads(second.body)["attemptCount"] == 2
    assert second.header("Idempotency-Key") == f"{sender}:{mid}:callback:2"


def test_a_failing_callback_is_retried_and_never_changes_the_message(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    hook = f"/status/503/{uuid.uuid4().hex}"
    mid = submit(api, sender, partner.url("/ok"), callbackUrl=partner.url(hook))
    api.wait_until(lambda: len(partner.received(hook)) >= 1, "the notice's first attempt")
    api.wait_until(lambda: (api.get(mid, senderId=sender).json()["callback"] or {}).get(
        "status") == "RETRYING", "the notice waiting for a retry")
    view = api.get(mid, senderId=sender).json()
    assert view["status"] == "DELIVERED"
    assert view["callback"]["attemptCount"] >= 1
    assert view["callback"]["lastError"] == "HTTP 503"


def test_no_notice_is_due_before_the_outcome(api: Api, partner: Partner) -> None:
    sender = new_sender()
    at = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    mid = submit(api, sender, partner.url("/ok"), callbackUrl=partner.url("/callbacks/x"),
                 deliverAt=at)
    view = api.get(mid, senderId=sender).json()
    assert view["callback"] is None
    assert view["status"] == "QUEUED"


def test_a_refused_callback_address_is_a_422(api: Api, partner: Partner) -> None:
    sender = new_sender()
    body = problem(api.submit({"messageId": "cb", "senderId": sender,
                               "targetUrl": partner.url("/ok"),
                               "callbackUrl": "http://10.0.0.1/hook"}),
                   422, "TARGET_NOT_ALLOWED")
    assert body["detail"].startswith("callbackUrl:")
    body = problem(api.submit({"messageId": "cb", "senderId": sender,
                               "targetUrl": partner.url("/ok"),
                               "callbackUrl": "ftp://example.com/x"}),
                   400, "VALIDATION_ERROR")
    assert [e["field"] for e in body["errors"]] == ["callbackUrl"]


def test_the_deliver_at_cap_is_a_setting(tmp_path: Path, partner: Partner) -> None:
    with ServerProcess(tmp_path / "r.db", "--allow-networks", "127.0.0.0/8",
                       "--deliver-at-cap", "1h") as server, Api(server.base_url) as api:
        later = rfc3339(datetime.now(UTC) + timedelta(minutes=50))
        too_late = rfc3339(datetime.now(UTC) + timedelta(minutes=70))
        assert api.submit({"messageId": "a", "targetUrl": partner.url("/ok"),
                           "deliverAt": later}).status_code == 202
        body = problem(api.submit({"messageId": "b", "targetUrl": partner.url("/ok"),
                                   "deliverAt": too_late}), 400, "VALIDATION_ERROR")
        assert "at most 1h ahead" in body["detail"]
