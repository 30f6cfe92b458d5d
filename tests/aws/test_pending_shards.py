"""`destPending` over 32 keys a destination: a destination's `pending` count, on moto's server
with the real API Lambda, and the items a release with 8 keys wrote."""

from __future__ import annotations

import hashlib

from notify_relay.adapters.aws.destinations import PENDING_SHARDS, pending_key
from notify_relay.domain.destination import DestinationKey
from tests.aws.moto import AwsResources, client
from tests.aws.test_lambdas_e2e import (  # noqa: F401  (lambdas: the fixture)
    call_api,
    destination,
    lambdas,
)
from tests.partner import Partner

SENDER = "orders"  # the test principal's senderId (test_lambdas_e2e.lambdas)


def test_pending_counts_every_one_of_32_shards_and_the_8_of_old_items(
    lambdas: AwsResources, partner: Partner  # noqa: F811
) -> None:
    assert PENDING_SHARDS == 32
    # Given 100 unfinished messages to one destination
    ids = [f"p-{i}" for i in range(100)]
    code, body, _ = call_api("POST", "/v1/messages/batch", {"messages": [
        {"messageId": m, "targetUrl": partner.url("/ok/busy"), "destination": "busy"}
        for m in ids]})
    assert code in (200, 202), body
    dynamodb = client("dynamodb", lambdas.endpoint)
    keys = [item["destPending"]["S"] for item in dynamodb.scan(
        TableName=lambdas.table, ProjectionExpression="destPending")["Items"]
        if "destPending" in item]
    assert len(keys) == 100
    assert len(set(keys)) >= 24  # spread: 100 over 32 shards fill about 31
    assert destination("busy")["pending"] == 100
    # an item written by a release with 8 shards keeps its key until its next write
    busy = DestinationKey(SENDER, "busy")
    for message_id in ids[:40]:
        pk = f"{SENDER}#{message_id}"
        old = pending_key(busy, hashlib.sha256(pk.encode()).digest()[1] % 8)
        dynamodb.update_item(TableName=lambdas.table, Key={"pk": {"S": pk}},
                             UpdateExpression="SET destPending = :k",
                             ExpressionAttributeValues={":k": {"S": old}})
    assert destination("busy")["pending"] == 100  # each counted once
    # When ten are cancelled, old keys among them, the count follows
    for message_id in ids[35:45]:
        code, _, _ = call_api("POST", f"/v1/messages/{message_id}/cancel")
        assert code == 200
    assert destination("busy")["pending"] == 90
