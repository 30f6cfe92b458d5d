"""The stack: storage, queues, functions, API, monitoring; cdk-nag over all of it."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from cdk_nag import AwsSolutionsChecks, NagPackSuppression, NagSuppressions
from constructs import Construct

from notify_relay_infra.api import Api
from notify_relay_infra.config import STAGES, StageConfig
from notify_relay_infra.functions import Functions
from notify_relay_infra.monitoring import Monitoring
from notify_relay_infra.queues import Queues
from notify_relay_infra.storage import Storage

REPO = Path(__file__).resolve().parents[2]


class NotifyRelayStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, stage: StageConfig, code: lambda_.Code,
                 iam_senders: str, reserved_concurrency: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        self.storage = Storage(self, "Storage", stage)
        self.queues = Queues(self, "Queues", stage)
        self.functions = Functions(self, "Functions", stage=stage, storage=self.storage,
                                   queues=self.queues, code=code, iam_senders=iam_senders,
                                   reserved_concurrency=reserved_concurrency)
        self.api = Api(self, "Api", stage=stage, handler=self.functions.api_entry)
        self.monitoring = Monitoring(self, "Monitoring", stage=stage, queues=self.queues,
                                     api_function=self.functions.api,
                                     worker=self.functions.worker,
                                     reconciler=self.functions.reconciler,
                                     outbox=self.functions.outbox,
                                     tables=[self.storage.table, self.storage.destinations],
                                     rest_api=self.api.rest_api,
                                     http_api=self.api.http_api)
        cdk.CfnOutput(self, "ApiUrl", value=self.api.rest_api.url)
        cdk.CfnOutput(self, "HttpApiUrl", value=self.api.http_stage.url)
        cdk.CfnOutput(self, "DeadLetterQueueUrl", value=self.queues.dead_letter.queue_url)
        suppress_nag_findings(self)


def suppress_nag_findings(stack: cdk.Stack) -> None:
    """Each accepted cdk-nag finding, with the reason it is accepted."""
    NagSuppressions.add_stack_suppressions(stack, [
        NagPackSuppression(
            id="AwsSolutions-IAM4",
            reason="AWSLambdaBasicExecutionRole (logs only) and API Gateway's CloudWatch push "
                   "role are AWS's own narrow managed policies for exactly these roles."),
        NagPackSuppression(
            id="AwsSolutions-IAM5",
            reason="Wildcards come from grant*: the table's index/* (the four GSIs), the "
                   "bucket's object keys (one object per large body), X-Ray's PutTraceSegments "
                   "(no resource-level permissions exist) and the bucket auto-delete helper."),
        NagPackSuppression(
            id="AwsSolutions-S1",
            reason="The bodies bucket is reached only by this stack's roles; its audit trail "
                   "is CloudTrail. A log bucket per stage costs more than it tells here."),
        NagPackSuppression(
            id="AwsSolutions-SQS3",
            reason="This queue is the dead-letter queue itself."),
        NagPackSuppression(
            id="AwsSolutions-APIG2",
            reason="Every request body is validated by the application against the contract, "
                   "with problem+json errors that API Gateway models could not give."),
        NagPackSuppression(
            id="AwsSolutions-APIG3",
            reason="Callers are internal and authenticated with IAM (SigV4); stage throttling "
                   "bounds load. WAF is left to the account's perimeter, not this stack."),
        NagPackSuppression(
            id="AwsSolutions-COG4",
            reason="The API uses IAM authorization (SigV4), not a Cognito user pool: callers "
                   "are services, not users."),
        NagPackSuppression(
            id="AwsSolutions-L1",
            reason="Python 3.13 is pinned on purpose: the runtime the package and its wheels "
                   "are built and tested for; moving to a newer one is a deliberate change."),
    ])


class MissingBundle(RuntimeError):
    """No Lambda bundle to deploy: packaging src/ alone would ship code without its
    dependencies, and every handler would fail at import once deployed."""


def asset_path(app: cdk.App) -> str:
    """`assetPath` from the context (scripts/synth passes src/ for a template-only check),
    else the bundle scripts/build-lambda made; never src/ by default."""
    given = app.node.try_get_context("assetPath")
    if given:
        return str(Path(given).resolve())
    built = REPO / "build" / "lambda"
    if not built.is_dir():
        raise MissingBundle(f"{built} is missing: run scripts/build-lambda first (or pass "
                            "-c assetPath=../src to synthesize a template only)")
    return str(built)


def reserved_concurrency(app: cdk.App) -> int | None:
    """Context `reservedConcurrency`: the worker's reserved executions, for an account
    whose Lambda quota was raised (none by default, so that any account can deploy)."""
    raw = app.node.try_get_context("reservedConcurrency")
    if raw is None or raw == "":
        return None
    if not str(raw).isdigit() or int(raw) < 1:
        raise ValueError(f"reservedConcurrency must be a positive integer, not {raw!r}")
    return int(raw)


def build_app(app: cdk.App) -> NotifyRelayStack:
    stage_name = app.node.try_get_context("stage") or "dev"
    if stage_name not in STAGES:
        raise ValueError(f"unknown stage {stage_name!r}: one of {', '.join(STAGES)}")
    stack = NotifyRelayStack(
        app, f"NotifyRelay-{stage_name}",
        stage=STAGES[stage_name],
        code=lambda_.Code.from_asset(asset_path(app)),
        iam_senders=app.node.try_get_context("iamSenders") or "",
        reserved_concurrency=reserved_concurrency(app),
        description=f"notify-relay ({stage_name}): reliable HTTP notifications",
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return stack
