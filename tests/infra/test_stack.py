"""The CDK app, synthesized once per session: its template, cfn-lint and cdk-nag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
sys.path.insert(0, str(INFRA))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk  # noqa: E402
from aws_cdk import assertions  # noqa: E402
from notify_relay_infra.stack import NotifyRelayStack, build_app  # noqa: E402

from tests.aws.moto import MESSAGE_INDEXES  # noqa: E402

Match = assertions.Match


class Synth:
    def __init__(self, stage: str) -> None:
        self.app = cdk.App(context={"stage": stage, "assetPath": str(INFRA.parent / "src"),
                                    "iamSenders": "arn:aws:iam::123456789012:role/orders=orders"})
        self.stack: NotifyRelayStack = build_app(self.app)
        self.template = assertions.Template.from_stack(self.stack)  # synthesizes, nag included
        self.json: dict[str, Any] = self.template.to_json()

    def resources(self, kind: str) -> dict[str, Any]:
        return self.template.find_resources(kind)


@pytest.fixture(scope="session")
def prod() -> Synth:
    return Synth("prod")


def one(synth: Synth, kind: str, **match: Any) -> dict[str, Any]:
    found = synth.template.find_resources(kind, {"Properties": Match.object_like(match)}
                                          if match else None)
    assert len(found) == 1, f"{kind}: {list(found)}"
    return next(iter(found.values()))["Properties"]


def messages_table(synth: Synth) -> dict[str, Any]:
    return one(synth, "AWS::DynamoDB::Table",
               KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])


def destinations_table(synth: Synth) -> dict[str, Any]:
    return one(synth, "AWS::DynamoDB::Table",
               KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                          {"AttributeName": "sk", "KeyType": "RANGE"}])


def test_table(prod: Synth) -> None:
    assert len(prod.resources("AWS::DynamoDB::Table")) == 2
    table = messages_table(prod)
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]]
               for i in table["GlobalSecondaryIndexes"]}
    assert indexes == {"bySender": ["listShard", "sortKey"],
                       "bySenderStatus": ["statusShard", "sortKey"],
                       "destPending": ["destPending", "createdAt"]}
    projections = {i["IndexName"]: i["Projection"]["ProjectionType"]
                   for i in table["GlobalSecondaryIndexes"]}
    assert projections["destPending"] == "KEYS_ONLY"  # counted, never read
    # no index copies whole items (with their bodies): each write of one would cost as
    # much again as the table's
    assert "ALL" not in projections.values()
    # the tables the moto tests run on are the deployed ones
    assert {i["IndexName"]: (i["KeySchema"], i["Projection"])
            for i in table["GlobalSecondaryIndexes"]} == {
        i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in MESSAGE_INDEXES}


def test_destinations_table(prod: Synth) -> None:
    table = destinations_table(prod)
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
        "pk": "S", "sk": "S"}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionProtectionEnabled"] is True
    assert "GlobalSecondaryIndexes" not in table
    assert "TimeToLiveSpecification" not in table


PROD_SHARDS = 4  # infra/notify_relay_infra/config.py: the prod stage's work_queues


def work_queues(synth: Synth) -> dict[str, Any]:
    """The work queue's shards (the queues with a redrive policy), by logical id."""
    return {logical: queue["Properties"] for logical, queue in synth.template.find_resources(
        "AWS::SQS::Queue", {"Properties": {"RedrivePolicy": Match.any_value()}}).items()}


def test_queues(prod: Synth) -> None:
    queues = prod.resources("AWS::SQS::Queue")
    assert len(queues) == PROD_SHARDS + 2  # the shards, their dead letters, outbox failures
    shards = work_queues(prod)
    assert len(shards) == PROD_SHARDS
    # shard 0 keeps the single queue's logical id: a stack deployed before shards keeps it
    assert sum(1 for logical in shards if logical.startswith("QueuesWork")
               and not logical.startswith(("QueuesWork1", "QueuesWork2", "QueuesWork3"))) == 1
    worker = one(prod, "AWS::Lambda::Function", Handler="notify_relay.lambdas.worker.handler")
    (dead_letter,) = {q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
                      for q in shards.values()}  # one dead-letter queue for every shard
    assert dead_letter not in shards
    for work in shards.values():
        assert work["VisibilityTimeout"] >= 6 * worker["Timeout"]
        assert work["RedrivePolicy"]["maxReceiveCount"] == 5
        assert work["MaximumMessageSize"] == 262144
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = prod.resources("AWS::SQS::QueuePolicy")
    assert len(policies) == PROD_SHARDS + 2  # TLS enforced on each


def test_bucket(prod: Synth) -> None:
    bucket = one(prod, "AWS::S3::Bucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True,
        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    # 30 days of deliverAt + 100 attempts of at most a day and 120 s + 30 days + a day
    assert rules["expire-with-the-message"]["ExpirationInDays"] == 30 + 101 + 30 + 1


def test_lambdas(prod: Synth) -> None:
    handlers = {}
    for function in prod.resources("AWS::Lambda::Function").values():
        props = function["Properties"]
        if props.get("Handler", "").startswith("notify_relay."):
            handlers[props["Handler"]] = props
    assert set(handlers) == {"notify_relay.lambdas.api.handler",
                             "notify_relay.lambdas.worker.handler",
                             "notify_relay.lambdas.reconciler.handler",
                             "notify_relay.lambdas.outbox.handler"}
    (destinations,) = prod.template.find_resources(
        "AWS::DynamoDB::Table", {"Properties": {"KeySchema": Match.array_with(
            [{"AttributeName": "sk", "KeyType": "RANGE"}])}})
    for props in handlers.values():
        assert props["Architectures"] == ["arm64"]
        assert props["Runtime"] == "python3.13"
        logging = {k: v for k, v in props["LoggingConfig"].items() if k != "LogGroup"}
        assert logging == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO",
                           "SystemLogLevel": "INFO"}
        assert props["TracingConfig"] == {"Mode": "Active"}
        env = props["Environment"]["Variables"]
        assert {"NOTIFY_RELAY_TABLE", "NOTIFY_RELAY_QUEUE_URL", "NOTIFY_RELAY_DEAD_LETTER_URL",
                "NOTIFY_RELAY_BUCKET", "NOTIFY_RELAY_IAM_SENDERS",
                "NOTIFY_RELAY_DESTINATIONS_TABLE"} <= set(env)
        assert env["NOTIFY_RELAY_DESTINATIONS_TABLE"] == {"Ref": destinations}
        assert env["NOTIFY_RELAY_RETENTION"] == "30"  # the stage's, for each item's TTL
    # every Lambda gets every shard's URL, in shard order, comma-separated
    urls = {json.dumps(props["Environment"]["Variables"]["NOTIFY_RELAY_QUEUE_URL"])
            for props in handlers.values()}
    assert len(urls) == 1
    (joined,) = [json.loads(u) for u in urls]
    assert joined["Fn::Join"][0] == ","
    refs = [part["Ref"] for part in joined["Fn::Join"][1]]
    assert sorted(refs) == sorted(work_queues(prod))
    # in shard order: Work (shard 0), Work1, Work2, Work3
    assert [ref.removeprefix("QueuesWork")[0] for ref in refs[1:]] == ["1", "2", "3"]
    # no reservation by default: Lambda refuses one that leaves fewer than 100 unreserved
    # executions, so a new account could not deploy the stack
    for props in handlers.values():
        assert "ReservedConcurrentExecutions" not in props
    mappings = worker_mappings(prod.json)
    assert sorted(m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings) == sorted(
        work_queues(prod))  # one event source a shard
    for mapping in mappings:
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["BatchSize"] == 100  # above 10 needs the batching window (1 s)
        # half a default account's executions over all shards: a backlog leaves the API
        # and the outbox the rest
        assert mapping["ScalingConfig"] == {"MaximumConcurrency": 500 // PROD_SHARDS}
    rule = one(prod, "AWS::Events::Rule")
    assert rule["ScheduleExpression"] == "rate(1 minute)"


def worker_mappings(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker's SQS event sources (the outbox's reads the stream)."""
    return [r["Properties"] for r in template["Resources"].values()
            if r["Type"] == "AWS::Lambda::EventSourceMapping"
            and "ScalingConfig" in r["Properties"]]


def _statements(synth: Synth, handler: str) -> list[dict[str, Any]]:
    roles = {}
    for logical, function in synth.resources("AWS::Lambda::Function").items():
        if function["Properties"].get("Handler") == handler:
            roles[function["Properties"]["Role"]["Fn::GetAtt"][0]] = logical
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if any(r["Ref"] in roles for r in policy["Properties"]["Roles"]):
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        action = statement["Action"]
        found |= {action} if isinstance(action, str) else set(action)
    return found


def test_least_privilege(prod: Synth) -> None:
    api = _actions(_statements(prod, "notify_relay.lambdas.api.handler"))
    worker = _actions(_statements(prod, "notify_relay.lambdas.worker.handler"))
    assert "sqs:SendMessage" not in api  # the outbox queues what the API stores
    assert "s3:PutObject" in api
    assert "sqs:ReceiveMessage" not in api  # only the worker's event source consumes
    assert "sqs:ReceiveMessage" in worker
    # the only wildcards are grant*'s own S3 action families, on this bucket alone
    assert {a for a in api | worker if a.endswith("*")} <= {
        "s3:Abort*", "s3:GetBucket*", "s3:GetObject*", "s3:List*"}
    assert "dynamodb:DeleteTable" not in api | worker
    assert "s3:DeleteObject" not in api | worker


def _resources_of(statements: list[dict[str, Any]], action: str) -> list[Any]:
    found: list[Any] = []
    for statement in statements:
        actions = statement["Action"]
        if action in ([actions] if isinstance(actions, str) else actions):
            resource = statement["Resource"]
            found += resource if isinstance(resource, list) else [resource]
    return found


def test_destinations_grants(prod: Synth) -> None:
    (destinations,) = prod.template.find_resources(
        "AWS::DynamoDB::Table", {"Properties": {"KeySchema": Match.array_with(
            [{"AttributeName": "sk", "KeyType": "RANGE"}])}})
    arn = {"Fn::GetAtt": [destinations, "Arn"]}
    for handler in ("api", "worker"):
        statements = _statements(prod, f"notify_relay.lambdas.{handler}.handler")
        for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem",
                       "dynamodb:Query", "dynamodb:BatchGetItem"):
            assert arn in _resources_of(statements, action), (handler, action)
    reconciler = _statements(prod, "notify_relay.lambdas.reconciler.handler")
    assert arn not in _resources_of(reconciler, "dynamodb:GetItem")


def test_api_gateway_iam_and_throttling(prod: Synth) -> None:
    methods = prod.resources("AWS::ApiGateway::Method")
    assert methods
    open_methods = []
    for name, method in methods.items():
        if method["Properties"]["AuthorizationType"] != "AWS_IAM":
            open_methods.append((name, method["Properties"]))
    # only the health check is open (uptime checks cannot sign), and only for GET
    ((name, health),) = open_methods
    assert (health["HttpMethod"], health["AuthorizationType"]) == ("GET", "NONE")
    resource = prod.resources("AWS::ApiGateway::Resource")[health["ResourceId"]["Ref"]]
    assert resource["Properties"]["PathPart"] == "healthz"
    # its own throttle: unsigned calls cannot use the stage's 100,000/s
    (health_throttle,) = [m for m in one(prod, "AWS::ApiGateway::Stage")["MethodSettings"]
                          if m["ResourcePath"] == "/~1healthz"]
    assert (health_throttle["HttpMethod"], health_throttle["ThrottlingRateLimit"]) == ("GET", 10)
    stage = one(prod, "AWS::ApiGateway::Stage")
    settings = stage["MethodSettings"][0]
    assert settings["ThrottlingRateLimit"] == 100_000
    assert settings["ThrottlingBurstLimit"] == 50_000
    assert "AccessLogSetting" in stage
    assert one(prod, "AWS::ApiGateway::RestApi")["EndpointConfiguration"]["Types"] == [
        "REGIONAL"]


def test_http_api_iam_health_open_and_throttled(prod: Synth) -> None:
    (api,) = prod.resources("AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "HTTP"
    routes = {r["Properties"]["RouteKey"]: r["Properties"]["AuthorizationType"]
              for r in prod.resources("AWS::ApiGatewayV2::Route").values()}
    assert routes == {"$default": "AWS_IAM", "GET /healthz": "NONE"}
    (integration,) = prod.resources("AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    (stage,) = prod.resources("AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]
    assert settings["StageName"] == "$default"  # no stage prefix in the app's paths
    assert settings["DefaultRouteSettings"] == {"ThrottlingBurstLimit": 50_000,
                                                "ThrottlingRateLimit": 100_000}
    assert settings["RouteSettings"] == {"GET /healthz": {"ThrottlingBurstLimit": 20,
                                                          "ThrottlingRateLimit": 10}}
    assert "requestId" in settings["AccessLogSettings"]["Format"]
    assert "HttpApiUrl" in prod.json["Outputs"]


def test_the_outbox_reads_the_stream_and_alone_sends_new_work(prod: Synth) -> None:
    assert messages_table(prod)["StreamSpecification"] == {
        "StreamViewType": "NEW_AND_OLD_IMAGES"}
    mapping = next(m["Properties"] for m in
                   prod.resources("AWS::Lambda::EventSourceMapping").values()
                   if "StartingPosition" in m["Properties"])
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (mapping["BatchSize"], mapping["ParallelizationFactor"]) == (100, 10)
    # unbounded: retried from the failed record for as long as the stream keeps it
    assert "MaximumRetryAttempts" not in mapping
    assert "MaximumRecordAgeInSeconds" not in mapping
    assert "OnFailure" in mapping["DestinationConfig"]
    (pattern,) = [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]
    assert pattern == {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {
        "status": {"S": ["QUEUED"]}, "queued": {"BOOL": [True]}}}}
    api = _actions(_statements(prod, "notify_relay.lambdas.api.handler"))
    outbox = _actions(_statements(prod, "notify_relay.lambdas.outbox.handler"))
    assert "sqs:SendMessage" in outbox
    assert "sqs:SendMessage" not in api  # it stores; the outbox queues
    # it reads the stream, never the table: the images carry all it needs
    assert {a for a in outbox if a.startswith("dynamodb:")} == {
        "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
        "dynamodb:ListStreams"}


def test_alarms_and_dashboard(prod: Synth) -> None:
    alarms = prod.resources("AWS::CloudWatch::Alarm")
    names = {a["Properties"].get("MetricName") for a in alarms.values()}
    assert {"ApproximateAgeOfOldestMessage", "Throttles", "5XXError"} <= names
    # the oldest entry's age, one alarm a shard
    ages = [a["Properties"] for a in alarms.values()
            if a["Properties"].get("MetricName") == "ApproximateAgeOfOldestMessage"]
    assert sorted(a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in ages) == sorted(
        work_queues(prod))
    expressions = {a["Properties"]["AlarmDescription"]: a for a in alarms.values()
                   if "Metrics" in a["Properties"]}
    # the two error rates, the dead-letter rate, throttles on each table
    assert len(expressions) == 5
    # the rate of dead letters, not the DLQ's depth (FAILED entries stay in the DLQ)
    dead = next(a for d, a in expressions.items() if d.startswith("More dead letters"))
    dead_metrics = {m["MetricStat"]["Metric"]["MetricName"]
                    for m in dead["Properties"]["Metrics"] if "MetricStat" in m}
    assert dead_metrics == {"DeadLettered", "Delivered"}
    assert dead["Properties"]["Threshold"] == 5.0
    (expression,) = [m["Expression"] for m in dead["Properties"]["Metrics"] if "Expression" in m]
    assert "FILL(delivered, 0)" in expression  # all dead, none delivered: 100 %, not no data
    assert not any("ApproximateNumberOfMessages" in str(a) and "DeadLetter" in str(a)
                   for a in alarms.values())
    poison = next(a for a in alarms.values() if a["Properties"].get("MetricName") == "Redriven")
    assert poison["Properties"]["Dimensions"] == [{"Name": "service", "Value": "reconciler"}]
    assert poison["Properties"]["Threshold"] == 0
    first = next(a["Properties"] for a in alarms.values()
                 if a["Properties"].get("MetricName") == "FirstAttemptDelay")
    assert (first["ExtendedStatistic"], first["Threshold"], first["Period"]) == ("p99", 10, 60)
    assert first["Dimensions"] == [{"Name": "service", "Value": "worker"}]
    behind = next(a["Properties"] for a in alarms.values()
                  if a["Properties"].get("MetricName") == "IteratorAge")
    assert (behind["Statistic"], behind["Threshold"]) == ("Maximum", 60_000)
    outbox_failures = next(a["Properties"] for a in alarms.values()
                           if a["Properties"]["AlarmDescription"].startswith(
                               "The outbox could not queue"))
    assert outbox_failures["MetricName"] == "ApproximateNumberOfMessagesVisible"
    throttles = [a for d, a in expressions.items() if d.startswith("DynamoDB throttles")]
    throttled = {m["MetricStat"]["Metric"]["MetricName"] for a in throttles
                 for m in a["Properties"]["Metrics"] if "MetricStat" in m}
    assert len(throttles) == 2
    assert throttled == {"ThrottledRequests"}
    reconciler_errors = [a for a in alarms.values()
                         if a["Properties"].get("AlarmDescription", "").startswith(
                             "The reconciler fails")]
    assert len(reconciler_errors) == 1
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"], "every alarm notifies the topic"
    (dashboard,) = prod.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for name in ("SubmissionsAccepted", "SubmissionsRejected", "FirstAttemptDelay",
                 "Delivered", "DeadLettered"):
        assert name in body, name
    assert len(prod.resources("AWS::SNS::Topic")) == 1


def test_stages_differ() -> None:
    dev = Synth("dev")
    assert messages_table(dev)["DeletionProtectionEnabled"] is False
    assert destinations_table(dev)["DeletionProtectionEnabled"] is False
    worker = one(dev, "AWS::Lambda::Function", Handler="notify_relay.lambdas.worker.handler")
    assert "ReservedConcurrentExecutions" not in worker
    # one work queue, one event source, within a new account's quota of 10 executions,
    # with room for the API and reconciler
    assert len(work_queues(dev)) == 1
    assert [m["ScalingConfig"] for m in worker_mappings(dev.json)] == [
        {"MaximumConcurrency": 5}]
    (url,) = {f["Properties"]["Environment"]["Variables"]["NOTIFY_RELAY_QUEUE_URL"]["Ref"]
              for f in dev.resources("AWS::Lambda::Function").values()
              if f["Properties"].get("Handler", "").startswith("notify_relay.")}
    assert url in work_queues(dev)  # one URL, as before shards
    with pytest.raises(ValueError, match="unknown stage"):
        build_app(cdk.App(context={"stage": "qa"}))


def test_reserved_concurrency_only_when_asked_for() -> None:
    app = cdk.App(context={"stage": "prod", "assetPath": str(INFRA.parent / "src"),
                           "reservedConcurrency": "4000"})
    template = assertions.Template.from_stack(build_app(app)).to_json()
    reserved = {r["Properties"]["Handler"].split(".")[2]:
                r["Properties"].get("ReservedConcurrentExecutions")
                for r in template["Resources"].values()
                if r["Type"] == "AWS::Lambda::Function"
                and r["Properties"].get("Handler", "").startswith("notify_relay.")}
    assert reserved == {"api": None, "worker": 4000, "reconciler": 1, "outbox": None}
    assert [m["ScalingConfig"] for m in worker_mappings(template)] == [
        {"MaximumConcurrency": 1000}] * PROD_SHARDS  # the stage's own, each shard
    with pytest.raises(ValueError, match="positive integer"):
        build_app(cdk.App(context={"stage": "dev", "assetPath": str(INFRA.parent / "src"),
                                   "reservedConcurrency": "-5"}))
    # below the event sources' maximum (4 shards x 1,000), Lambda throttles the sources:
    # records would reach the dead-letter queue unattempted
    with pytest.raises(ValueError, match="below the worker's event source maximum"):
        build_app(cdk.App(context={"stage": "prod", "assetPath": str(INFRA.parent / "src"),
                                   "reservedConcurrency": "3000"}))


def test_cdk_nag_has_no_unsuppressed_findings(prod: Synth) -> None:
    # raises, listing the findings, if any AwsSolutions rule fires unsuppressed; without
    # suppress_nag_findings it reports APIG2, COG4, IAM4, IAM5, L1 and S1 on this stack
    annotations = assertions.Annotations.from_stack(prod.stack)
    annotations.has_no_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    annotations.has_no_warning("*", Match.string_like_regexp("AwsSolutions-.*"))


def test_every_suppression_has_a_reason(prod: Synth) -> None:
    rules = prod.json["Metadata"]["cdk_nag"]["rules_to_suppress"]
    assert rules
    for rule in rules:
        assert len(rule["reason"]) > 40, rule


def test_cfn_lint_finds_no_errors(prod: Synth, tmp_path: Path) -> None:
    template = tmp_path / "template.json"
    template.write_text(json.dumps(prod.json))
    result = subprocess.run([sys.executable, "-m", "cfnlint", "--format", "parseable",
                             str(template)], capture_output=True, text=True, check=False)
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert errors == [], result.stdout


def test_no_bundle_stops_the_synth_instead_of_shipping_src_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without build/lambda, src/ used to be packaged silently, without its dependencies."""
    from notify_relay_infra import stack

    monkeypatch.setattr(stack, "REPO", tmp_path)
    app = cdk.App(context={"stage": "dev"})
    with pytest.raises(stack.MissingBundle, match="scripts/build-lambda"):
        stack.asset_path(app)
    (tmp_path / "build" / "lambda").mkdir(parents=True)
    assert stack.asset_path(app) == str(tmp_path / "build" / "lambda")


def test_cdk_runs_the_app_with_the_projects_interpreter() -> None:
    """`cdk deploy` from infra/ works without an activated virtualenv."""
    command = json.loads((INFRA / "cdk.json").read_text())["app"].split()
    assert command[1:] == ["app.py"]
    interpreter = (INFRA / command[0]).resolve()
    assert interpreter == (INFRA.parent / ".venv" / "bin" / "python").resolve()
    assert interpreter.exists()


def test_signing_secrets_live_in_secrets_manager_and_only_the_worker_reads_them(
    prod: Synth
) -> None:
    secret = next(iter(prod.resources("AWS::SecretsManager::Secret")))
    functions = {props["Properties"]["Handler"]: props["Properties"]
                 for props in prod.resources("AWS::Lambda::Function").values()
                 if props["Properties"].get("Handler", "").startswith("notify_relay.")}
    for function in functions.values():
        env = function["Environment"]["Variables"]
        assert env["NOTIFY_RELAY_SIGNING_SECRETS_ARN"] == {"Ref": secret}
        assert "NOTIFY_RELAY_SIGNING_SECRETS" not in env  # never the values themselves
    readers = [handler for handler in functions
               if secret in str(_resources_of(_statements(prod, handler),
                                              "secretsmanager:GetSecretValue"))]
    assert readers == ["notify_relay.lambdas.worker.handler"]


def test_prod_api_function_starts_from_a_snapshot_behind_an_alias(prod: Synth) -> None:
    functions = prod.resources("AWS::Lambda::Function")
    (api_id,) = [name for name, f in functions.items()
                 if f["Properties"].get("Handler") == "notify_relay.lambdas.api.handler"]
    assert functions[api_id]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    snap_started = [f["Properties"]["Handler"] for f in functions.values()
                    if "SnapStart" in f["Properties"]]
    assert snap_started == ["notify_relay.lambdas.api.handler"]
    ((version_id, version),) = [(name, v) for name, v in
                                prod.resources("AWS::Lambda::Version").items()
                                if v["Properties"]["FunctionName"] == {"Ref": api_id}]
    assert version["DeletionPolicy"] == "Delete"  # old versions do not pile up
    ((alias_id, alias),) = prod.resources("AWS::Lambda::Alias").items()
    assert alias["Properties"]["FunctionName"] == {"Ref": api_id}
    assert alias["Properties"]["FunctionVersion"] == {
        "Fn::GetAtt": [version_id, "Version"]}
    # both APIs invoke the alias (a snapshot exists only for a published version), never
    # the function's $LATEST, and may: each permission names the alias
    uris = [json.dumps(m["Properties"]["Integration"]["Uri"])
            for m in prod.resources("AWS::ApiGateway::Method").values()]
    uris += [json.dumps(i["Properties"]["IntegrationUri"])
             for i in prod.resources("AWS::ApiGatewayV2::Integration").values()]
    assert uris
    assert all(alias_id in uri for uri in uris), uris
    permissions = [p["Properties"]["FunctionName"]
                   for p in prod.resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "apigateway.amazonaws.com"]
    assert permissions
    assert all(p == {"Ref": alias_id} for p in permissions), permissions


def test_dev_api_function_has_no_snapshot() -> None:
    dev = Synth("dev")
    assert not dev.resources("AWS::Lambda::Alias")
    assert all("SnapStart" not in f["Properties"]
               for f in dev.resources("AWS::Lambda::Function").values())


def test_work_queue_shards_fit_a_functions_environment() -> None:
    """Their URLs go into every function's environment (4 KB in all, by Lambda)."""
    import dataclasses

    from notify_relay_infra.config import MAX_WORK_QUEUES, STAGES

    assert dataclasses.replace(STAGES["prod"], work_queues=MAX_WORK_QUEUES)
    with pytest.raises(ValueError, match="work_queues must be 1-8"):
        dataclasses.replace(STAGES["prod"], work_queues=MAX_WORK_QUEUES + 1)
