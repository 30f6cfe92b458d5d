"""API Gateway (REST) in front of the API Lambda, every method behind IAM (SigV4) except
`GET /healthz`."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from notify_relay_infra.config import StageConfig

HEALTH_RATE = 10  # requests/s for the open /healthz: uptime checks, not traffic


class Api(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: StageConfig,
                 handler: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        access_logs = logs.LogGroup(self, "AccessLogs", retention=stage.log_retention,
                                    removal_policy=stage.removal_policy)
        self.rest_api = apigw.LambdaRestApi(
            self, "Rest",
            handler=handler,
            proxy=True,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM),
            # the contract's 6 MiB limit is enforced by the app (413); API Gateway's own
            # hard limit is 10 MB and Lambda's synchronous payload limit 6 MB (docs/aws.md)
            binary_media_types=[],
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=stage.name,
                throttling_rate_limit=stage.api_rate_limit,
                throttling_burst_limit=stage.api_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                method_options={"/healthz/GET": apigw.MethodDeploymentOptions(
                    throttling_rate_limit=HEALTH_RATE, throttling_burst_limit=HEALTH_RATE * 2)},
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True, http_method=True, ip=True, protocol=True,
                    request_time=True, resource_path=True, response_length=True,
                    status=True, user=True),
            ),
        )
        # liveness for load balancers and uptime checks, which cannot sign: it answers
        # 200 {"status": "ok"} and reveals nothing (the app's /healthz needs no sender);
        # throttled on its own (HEALTH_RATE), so unsigned calls cannot take the API
        # Lambda's concurrency from signed callers
        self.health = self.rest_api.root.add_resource("healthz").add_method(
            "GET", apigw.LambdaIntegration(handler),
            authorization_type=apigw.AuthorizationType.NONE)
        NagSuppressions.add_resource_suppressions(self.health, [NagPackSuppression(
            id="AwsSolutions-APIG4",
            reason="GET /healthz only: liveness for uptime checks that cannot sign SigV4; it "
                   "answers 200 with no data, and its own method throttle (10/s) bounds it.")])
        self.rest_api.add_request_validator(
            "ValidateParameters", validate_request_parameters=True,
            validate_request_body=False)
