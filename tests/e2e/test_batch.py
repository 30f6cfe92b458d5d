"""POST /v1/messages/batch (contract v1.1) over real sockets: each item judged on its own,
answered in order, and every accepted one stored before the answer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from notify_relay.api.schemas import BatchOut
from tests.e2e.api_client import Api, ServerProcess
from tests.e2e.test_api import problem
from tests.partner import Partner


def batch(api: Api, messages: list[Any], **params: str) -> httpx.Response:
    return api.http.post("/v1/messages/batch", json={"messages": messages}, params=params)


def new_sender() -> str:
    return f"batch-{uuid.uuid4().hex[:8]}"


def test_a_batch_of_100_is_accepted_stored_and_delivered(api: Api, partner: Partner) -> None:
    sender = new_sender()
    path = f"/ok/{sender}"
    items = [{"messageId": f"b-{i}", "senderId": sender, "targetUrl": partner.url(path),
              "body": {"i": i}} for i in range(100)]
    response = batch(api, items)
    assert response.status_code == 200, response.text
    body = response.json()
    BatchOut.model_validate(body)
    assert [item["httpStatus"] for item in body["items"]] == [202] * 100
    assert [item["messageId"] for item in body["items"]] == [f"b-{i}" for i in range(100)]
    assert {item["status"] for item in body["items"]} == {"QUEUED"}
    assert all(item["stored"] and item["queued"] and not item["duplicate"]
               for item in body["items"])
    assert {item["correlationId"] for item in body["items"]} == {
        response.headers["x-correlation-id"]}
    api.wait_until(lambda: len(partner.received(path)) == 100, "100 deliveries")
    assert sorted(r.body for r in partner.received(path)) == sorted(
        f'{{"i":{i}}}'.encode() for i in range(100))
    # sent again: every item a duplicate, nothing new stored or sent
    again = batch(api, items).json()
    assert [item["httpStatus"] for item in again["items"]] == [200] * 100
    assert all(item["duplicate"] for item in again["items"])


def test_each_item_is_judged_on_its_own_in_request_order(api: Api, partner: Partner) -> None:
    sender = new_sender()
    ok = {"messageId": "ok", "senderId": sender, "targetUrl": partner.url("/ok")}
    items: list[Any] = [
        ok,
        {"messageId": "bad-url", "senderId": sender, "targetUrl": "ftp://example.com/"},
        dict(ok),  # the same id again, same content: a resubmission
        {**ok, "body": "changed"},  # the same id, other content: a conflict
        "not an object",
        {"messageId": "private", "senderId": sender, "targetUrl": "http://10.1.2.3/hook"},
        {"senderId": sender, "targetUrl": partner.url("/ok")},  # no messageId
    ]
    answers = batch(api, items).json()["items"]
    assert [a["httpStatus"] for a in answers] == [202, 400, 200, 409, 400, 422, 400]
    assert answers[1] == {"httpStatus": 400, "code": "VALIDATION_ERROR",
                          "detail": "targetUrl: must be an absolute http or https URL",
                          "errors": [{"field": "targetUrl",
                                      "message": "must be an absolute http or https URL"}],
                          "messageId": "bad-url"}
    assert answers[2]["duplicate"] is True
    assert (answers[3]["code"], answers[3]["messageId"]) == ("IDEMPOTENCY_CONFLICT", "ok")
    assert "messageId" not in answers[4]
    assert answers[5]["code"] == "TARGET_NOT_ALLOWED"
    assert [e["field"] for e in answers[6]["errors"]] == ["messageId"]
    listed = api.list(senderId=sender).json()["items"]
    assert [m["messageId"] for m in listed] == ["ok"]


def test_what_is_not_a_batch_is_one_400(api: Api, partner: Partner) -> None:
    item = {"messageId": "x", "targetUrl": partner.url("/ok")}
    for body in ({"messages": []}, {"messages": [item] * 101}, {}, {"messages": item},
                 {"messages": [item], "extra": 1}, [item]):
        problem(api.http.post("/v1/messages/batch", json=body), 400, "VALIDATION_ERROR")
    response = api.http.post("/v1/messages/batch", content=b'{"messages": [',
                             headers={"Content-Type": "application/json"})
    assert [e["field"] for e in problem(response, 400, "VALIDATION_ERROR")["errors"]] == [""]
    response = api.http.post("/v1/messages/batch", content=b"messages",
                             headers={"Content-Type": "text/plain"})
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_items_of_another_sender_than_the_key_are_refused_alone(
    tmp_path: Path, partner: Partner
) -> None:
    with ServerProcess(tmp_path / "r.db", "--allow-networks", "127.0.0.0/8",
                       "--api-keys", "key-a=alpha") as server, \
            Api(server.base_url, key="key-a") as api:
        answers = batch(api, [
            {"messageId": "mine", "targetUrl": partner.url("/ok")},
            {"messageId": "theirs", "senderId": "beta", "targetUrl": partner.url("/ok")},
        ]).json()["items"]
        assert [a["httpStatus"] for a in answers] == [202, 403]
        assert answers[0]["senderId"] == "alpha"
        assert answers[1]["code"] == "FORBIDDEN"
        with Api(server.base_url) as anonymous:
            problem(batch(anonymous, [{"messageId": "x", "targetUrl": partner.url("/ok")}]),
                    401, "UNAUTHENTICATED")


def test_items_over_the_rate_are_429_in_their_place(tmp_path: Path, partner: Partner) -> None:
    with ServerProcess(tmp_path / "r.db", "--allow-networks", "127.0.0.0/8",
                       "--rate-limit", "1", "--rate-burst", "3") as server, \
            Api(server.base_url) as api:
        response = batch(api, [{"messageId": f"r-{i}", "targetUrl": partner.url("/ok")}
                               for i in range(5)])
        answers = response.json()["items"]
        assert [a["httpStatus"] for a in answers] == [202, 202, 202, 429, 429]
        assert answers[3]["code"] == "RATE_LIMITED"
        # the contract pairs RATE_LIMITED with Retry-After: the response carries the wait
        assert 1 <= int(response.headers["retry-after"]) <= 2
    with ServerProcess(tmp_path / "r2.db", "--allow-networks", "127.0.0.0/8") as server, \
            Api(server.base_url) as api:  # no rate: no Retry-After on a batch
        response = batch(api, [{"messageId": "n-0", "targetUrl": partner.url("/ok")}])
        assert response.status_code == 200
        assert "retry-after" not in response.headers


def test_an_item_as_deep_as_a_single_submission_may_be_is_judged_alone(
    api: Api, partner: Partner
) -> None:
    sender = new_sender()
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    single = api.submit({"messageId": "deep-single", "senderId": sender,
                         "targetUrl": partner.url("/ok"), "body": deep})
    assert single.status_code == 202, single.text
    answers = batch(api, [
        {"messageId": "good", "senderId": sender, "targetUrl": partner.url("/ok")},
        {"messageId": "deep", "senderId": sender, "targetUrl": partner.url("/ok"),
         "body": deep},
    ])
    assert answers.status_code == 200, answers.text
    assert [a["httpStatus"] for a in answers.json()["items"]] == [202, 202]


def test_an_item_nested_near_the_parsers_bound_never_fails_its_batch(
    api: Api, partner: Partner
) -> None:
    """The deepest body POST /v1/messages takes (the parser's bound is the stack left:
    965-975 levels here, with two processes): the batch, parsed deeper in the stack and two
    levels deeper, refused as a whole from 954 (helper-49), and its ordinary item was lost
    with it. Now each item is judged: as deep as this, the item itself may be refused, its
    neighbour is not."""
    sender = new_sender()

    def item(message_id: str, depth: int) -> bytes:
        return (b'{"messageId": "%s", "senderId": "%s", "targetUrl": "%s", "body": %s}'
                % (message_id.encode(), sender.encode(), partner.url("/ok").encode(),
                   b"[" * depth + b"]" * depth))

    for depth in range(968, 900, -4):  # from the deepest the single path takes here
        single = api.http.post("/v1/messages", content=item(f"deep-{depth}", depth),
                               headers={"Content-Type": "application/json"})
        if single.status_code == 202:
            break
        assert single.status_code == 400, single.text
    assert single.status_code == 202, single.text
    ordinary = (b'{"messageId": "fine", "senderId": "%s", "targetUrl": "%s"}'
                % (sender.encode(), partner.url("/ok").encode()))
    answers = api.http.post("/v1/messages/batch",
                            content=b'{"messages": [' + ordinary + b", "
                            + item("deep", depth) + b"]}",
                            headers={"Content-Type": "application/json"})
    assert answers.status_code == 200, answers.text
    fine, deep = answers.json()["items"]
    assert fine["httpStatus"] == 202
    assert deep["httpStatus"] in (202, 400)
