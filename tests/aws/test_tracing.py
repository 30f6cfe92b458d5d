"""X-Ray traces from the real handlers, as Lambda runs them: each in a fresh process with a
function's environment (the Tracer is made, and botocore patched, at import), the
invocation's trace id in `_X_AMZN_TRACE_ID`, and a UDP socket on 127.0.0.1 where the X-Ray
daemon would listen, receiving the segment documents the SDK sends; AWS is moto's server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.aws.lambda_harness import ROLE
from tests.aws.moto import AwsResources
from tests.partner import Partner

ROOT = Path(__file__).resolve().parents[2]
TRACE_ROOT = "1-67891233-abcdef012345678912345678"


class Daemon:
    """The X-Ray daemon's UDP side: every document the SDK sends, decoded."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.documents: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.sock.recv(65536)
            except TimeoutError:
                continue
            header, _, body = packet.partition(b"\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            self.documents.append(json.loads(body))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d.get("name") == name]


@pytest.fixture
def daemon() -> Any:
    d = Daemon()
    yield d
    d.close()


def run_in_lambda(script: str, aws: AwsResources, daemon: Daemon) -> list[dict[str, Any]]:
    """Runs `script` in a new process that Powertools and the X-Ray SDK take for Lambda;
    its JSON log lines."""
    env = {**os.environ, **aws.env(NOTIFY_RELAY_IAM_SENDERS=f"{ROLE}=orders",
                                   NOTIFY_RELAY_ALLOW_NETWORKS="127.0.0.0/8"),
           "AWS_LAMBDA_FUNCTION_NAME": "traced", "LAMBDA_TASK_ROOT": str(ROOT),
           "_X_AMZN_TRACE_ID": f"Root={TRACE_ROOT};Parent=53995c3f42cd8ad8;Sampled=1",
           "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
           "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]


def aws_calls(daemon: Daemon) -> dict[str, set[str]]:
    """Service -> the operations of its traced calls, in our trace."""
    calls: dict[str, set[str]] = {}
    for d in daemon.documents:
        if d.get("namespace") == "aws" and d.get("trace_id") == TRACE_ROOT:
            calls.setdefault(d["name"], set()).add(d["aws"]["operation"])
    return calls


def wait_for(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    """The documents named `name`, once one has come (UDP: after the process ended)."""
    deadline = time.monotonic() + 5
    while not daemon.named(name):
        assert time.monotonic() < deadline, f"no {name} subsegment: {daemon.documents}"
        time.sleep(0.05)
    return daemon.named(name)


def test_api_and_worker_invocations_are_traced_with_their_aws_calls(
        aws: AwsResources, daemon: Daemon, partner: Partner) -> None:
    logs = run_in_lambda(f"""
        from notify_relay.lambdas import api
        from tests.aws.lambda_harness import FakeContext, api_event
        response = api.handler(api_event("POST", "/v1/messages", {{
            "messageId": "t-1", "targetUrl": "{partner.url('/ok')}", "body": {{"a": 1}}}}),
            FakeContext())
        assert response["statusCode"] == 202, response
    """, aws, daemon)
    (handler,) = wait_for(daemon, "## handler")
    assert handler["trace_id"] == TRACE_ROOT
    assert handler["annotations"] == {"ColdStart": True, "Service": "api", "status": 202}
    assert "PutItem" in aws_calls(daemon)["dynamodb"]
    assert "metadata" not in handler or "handler response" not in str(handler["metadata"])
    (accepted,) = [line for line in logs if line["message"] == "accepted"]
    assert accepted["xray_trace_id"] == TRACE_ROOT  # a message's log lines lead to its trace

    daemon.documents.clear()
    run_in_lambda("""
        from notify_relay.lambdas import outbox, worker
        from tests.aws.lambda_harness import SqsEventSource, StreamEventSource, stream_arn
        from tests.aws.moto import client
        import os
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        stream = StreamEventSource(client("dynamodbstreams", endpoint),
                                   stream_arn(client("dynamodb", endpoint),
                                              os.environ["NOTIFY_RELAY_TABLE"]),
                                   outbox.handler)
        source = SqsEventSource(client("sqs", endpoint), os.environ["NOTIFY_RELAY_QUEUE_URL"],
                                worker.handler, outbox=stream)
        assert source.poll_once() == 1
        assert source.failures == 0
    """, aws, daemon)
    assert len(partner.received("/ok")) == 1
    handlers = daemon.named("## handler")
    wait_for(daemon, "sqs")
    services = {h["annotations"]["Service"] for h in handlers}
    assert services == {"outbox", "worker"}, handlers
    (work,) = [h for h in handlers if h["annotations"]["Service"] == "worker"]
    assert work["annotations"]["records"] == 1
    assert work["annotations"]["failures"] == 0
    assert work["metadata"]["worker"]["messageIds"] == ["t-1"]
    calls = aws_calls(daemon)
    assert "SendMessageBatch" in calls["sqs"]  # the outbox's
    assert {"GetItem", "UpdateItem"} & calls["dynamodb"]  # the worker's claim and outcome


def test_a_batch_whose_records_all_fail_is_traced_with_its_counts(
        aws: AwsResources, daemon: Daemon) -> None:
    """Powertools then raises BatchProcessingError with every record's traceback in its
    text: recorded on the subsegment, 100 of them made a document over the daemon's UDP
    datagram limit, and the batch's trace was lost; its annotations were never set."""
    run_in_lambda("""
        import copy
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
        from notify_relay.lambdas import worker
        from tests.aws.lambda_harness import NOT_AN_ENTRY_BATCH, FakeContext
        (record,) = NOT_AN_ENTRY_BATCH["Records"]
        records = [dict(copy.deepcopy(record), messageId=f"m-{i}") for i in range(100)]
        try:
            worker.handler({"Records": records}, FakeContext())
        except BatchProcessingError as exc:
            assert str(exc).startswith("all 100 records of the batch failed"), str(exc)[:300]
        else:
            raise AssertionError("a batch of records that are not entries must fail")
    """, aws, daemon)
    (handler,) = wait_for(daemon, "## handler")
    assert handler["annotations"] == {"ColdStart": True, "Service": "worker", "records": 100,
                                      "failures": 100}
    assert handler["fault"] or handler["error"]  # the invocation failed, and says so
