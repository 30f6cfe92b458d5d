"""API Gateway in front of the API Lambda, every route behind IAM (SigV4) except
`GET /healthz`: a REST API, and an HTTP API beside it for the same routes.

The HTTP API costs $1.00 a million requests against REST's $3.50 and adds less latency;
REST keeps what HTTP APIs lack (X-Ray tracing, request validation, WAF, usage plans). Both
reach the same function, which reads the caller's IAM principal from either payload.
"""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
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

        self.http_api = self._http_api(stage, handler)

    def _http_api(self, stage: StageConfig, handler: lambda_.IFunction) -> apigwv2.HttpApi:
        """Every route (`$default`) behind IAM, payload 2.0; GET /healthz open with its own
        throttle; the stage throttled as the REST stage is, with JSON access logs."""
        integration = integrations.HttpLambdaIntegration(
            "Lambda", handler, payload_format_version=apigwv2.PayloadFormatVersion.VERSION_2_0)
        http_api = apigwv2.HttpApi(
            self, "Http", create_default_stage=False, default_integration=integration,
            default_authorizer=authorizers.HttpIamAuthorizer())
        health = http_api.add_routes(path="/healthz", methods=[apigwv2.HttpMethod.GET],
                                     integration=integration,
                                     authorizer=apigwv2.HttpNoneAuthorizer())
        NagSuppressions.add_resource_suppressions(health, [NagPackSuppression(
            id="AwsSolutions-APIG4",
            reason="GET /healthz only, as on the REST API: liveness for uptime checks that "
                   "cannot sign; it answers 200 with no data, throttled to 10/s.")])
        access_logs = logs.LogGroup(self, "HttpAccessLogs", retention=stage.log_retention,
                                    removal_policy=stage.removal_policy)
        http_stage = apigwv2.HttpStage(
            # $default: no stage prefix in the paths the app sees (/v1/messages, as on REST)
            self, "HttpStage", http_api=http_api, stage_name="$default", auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=stage.api_rate_limit,
                                              burst_limit=stage.api_burst_limit))
        cfn_stage = http_stage.node.default_child
        assert isinstance(cfn_stage, apigwv2.CfnStage)
        cfn_stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn,
            format=('{"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
                    '"caller":"$context.identity.caller","user":"$context.identity.user",'
                    '"requestTime":"$context.requestTime","httpMethod":"$context.httpMethod",'
                    '"routeKey":"$context.routeKey","status":"$context.status",'
                    '"protocol":"$context.protocol",'
                    '"responseLength":"$context.responseLength",'
                    '"integrationError":"$context.integrationErrorMessage"}'))
        # RouteSettings is untyped JSON to CloudFormation: CloudFormation's names, as is
        cfn_stage.route_settings = {"GET /healthz": {"ThrottlingRateLimit": HEALTH_RATE,
                                                     "ThrottlingBurstLimit": HEALTH_RATE * 2}}
        self.http_stage = http_stage
        return http_api
