"""The worker Lambda with a batch of 100, as the stack's event source sends them: one
invocation delivers the free destinations' records together and holds a paused one's
without waiting on it."""

from __future__ import annotations

from typing import Any

from tests.aws.moto import AwsResources
from tests.aws.test_lambdas_e2e import (  # noqa: F401  (lambdas: the fixture)
    call_api,
    destination,
    lambdas,
    queue_counts,
    queued_entries,
    source,
    status_of,
    view_of,
)
from tests.partner import Partner

BATCH = 100  # infra/notify_relay_infra/functions.py: the event source's batch size


def test_a_batch_of_100_with_a_paused_destination(lambdas: AwsResources,  # noqa: F811
                                                  partner: Partner) -> None:
    code, _, _ = call_api("PATCH", "/v1/destinations/held-one", {"paused": True})
    assert code == 200
    # Given 100 messages in two batch submissions: 80 over four free destinations, 20
    # to the paused one
    ids = {"free": [f"free-{i}" for i in range(80)], "held": [f"held-{i}" for i in range(20)]}
    messages = [{"messageId": m, "targetUrl": partner.url(f"/ok/free{i % 4}"),
                 "destination": f"free-{i % 4}"} for i, m in enumerate(ids["free"])]
    messages += [{"messageId": m, "targetUrl": partner.url("/ok/held"),
                  "destination": "held-one"} for m in ids["held"]]
    for half in (messages[:50], messages[50:]):
        code, body, _ = call_api("POST", "/v1/messages/batch", {"messages": half})
        assert code in (200, 202, 207), body
    # When one invocation gets all 100 (gathered in ten receives, each entry invisible for
    # longer than that takes, as the stack's visibility timeout is: with the event source's
    # 2 s, a loaded machine took longer, the first ones came round again into the same
    # batch, and the last ones stayed out of it)
    events = source(lambdas, batch_size=BATCH, visibility_timeout=60)
    assert events.poll_once() == BATCH
    assert events.failures == 0
    # Then every free record was delivered in it, once, and the paused one's held
    assert all(status_of(m) == "DELIVERED" for m in ids["free"])
    assert sum(len(partner.received(f"/ok/free{i}")) for i in range(4)) == 80
    assert partner.received("/ok/held") == []
    assert queue_counts(lambdas)["ApproximateNumberOfMessagesNotVisible"] == 0
    for m in ids["held"]:
        assert (view_of(m)["status"], view_of(m)["attemptCount"]) == ("QUEUED", 0)
    assert destination("held-one")["pending"] == 20
    assert sorted(queued_entries(lambdas, 20)) == sorted(ids["held"])


def test_an_attempt_that_could_outlast_the_invocation_is_not_started(
        lambdas: AwsResources, partner: Partner) -> None:  # noqa: F811
    """An invocation with 20 s left and a message whose attempt may take 30 s: cut off
    mid-request, it would be sent again after a lease. It goes back to the queue instead,
    due at once, unattempted, and the next invocation (with time) delivers it once."""
    call_api("POST", "/v1/messages", {"messageId": "late-1", "targetUrl": partner.url("/ok/late"),
                                      "timeoutSeconds": 30})
    events = source(lambdas)
    events.remaining_ms = 20_000
    assert events.poll_once() == 1
    assert events.failures == 0  # not a failure: no receive count spent toward the DLQ
    assert partner.received("/ok/late") == []
    assert (view_of("late-1")["status"], view_of("late-1")["attemptCount"]) == ("QUEUED", 0)
    assert queued_entries(lambdas, 1) == ["late-1"]
    events.remaining_ms = 150_000
    events.run_until(lambda: status_of("late-1") == "DELIVERED")
    assert len(partner.received("/ok/late")) == 1


def test_a_batch_s_aws_calls_are_not_queued_on_small_pools(lambdas: AwsResources) -> None:  # noqa: F811
    """64 blocking calls at once fit in a handler's loop (asyncio's default pool has CPUs + 4
    threads), and botocore keeps as many connections open (its default is 10)."""
    import asyncio
    import threading

    from notify_relay.bootstrap import build_aws
    from notify_relay.config import AwsSettings
    from notify_relay.lambdas import AWS_CALLS_IN_FLIGHT, new_loop

    barrier = threading.Barrier(AWS_CALLS_IN_FLIGHT, timeout=10)

    async def all_at_once() -> None:  # each call returns only once all are in flight
        await asyncio.gather(*(asyncio.to_thread(barrier.wait)
                               for _ in range(AWS_CALLS_IN_FLIGHT)))

    loop = new_loop()
    try:
        loop.run_until_complete(all_at_once())
    finally:
        loop.close()
    runtime = build_aws(AwsSettings.from_env(), worker=False)
    store: Any = runtime.relay.store
    queue: Any = runtime.relay.queue
    for client_ in (store._db, store._s3, queue._sqs):
        assert client_.meta.config.max_pool_connections == AWS_CALLS_IN_FLIGHT
