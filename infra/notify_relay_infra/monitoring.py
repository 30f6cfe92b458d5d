"""Alarms (to an SNS topic) and one dashboard: is work flowing, and is anything stuck."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from notify_relay_infra.config import StageConfig
from notify_relay_infra.queues import Queues

NAMESPACE = "NotifyRelay"
FIRST_ATTEMPT_P99_SECONDS = 10  # the embedded server's target, kept on AWS
OUTBOX_AGE_MS = 60_000  # the stream's oldest record not yet queued
# what the adapters call; a throttle on any of them slows submissions or deliveries
TABLE_OPERATIONS = [dynamodb.Operation.PUT_ITEM, dynamodb.Operation.UPDATE_ITEM,
                    dynamodb.Operation.GET_ITEM, dynamodb.Operation.QUERY,
                    dynamodb.Operation.DELETE_ITEM]


def _error_rate(function: lambda_.Function, label: str) -> cw.MathExpression:
    return cw.MathExpression(
        expression="100 * errors / MAX([invocations, 1])",
        using_metrics={"errors": function.metric_errors(statistic="Sum"),
                       "invocations": function.metric_invocations(statistic="Sum")},
        label=f"{label} error rate (%)", period=Duration.minutes(5))


class Monitoring(Construct):
    def __init__(self, scope: Construct, id: str, *, stage: StageConfig, queues: Queues,
                 api_function: lambda_.Function, worker: lambda_.Function,
                 reconciler: lambda_.Function, outbox: lambda_.Function,
                 tables: list[dynamodb.Table],
                 rest_api: apigw.RestApi, http_api: apigwv2.HttpApi) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Alarms", enforce_ssl=True)
        alarm_action = actions.SnsAction(self.topic)

        def emf(service: str, name: str, minutes: int = 5, statistic: str = "Sum") -> cw.Metric:
            return cw.Metric(namespace=NAMESPACE, metric_name=name,
                             dimensions_map={"service": service}, statistic=statistic,
                             period=Duration.minutes(minutes))

        def alarm(name: str, metric: cw.IMetric, threshold: float, periods: int = 1,
                  description: str = "") -> cw.Alarm:
            created = cw.Alarm(
                self, name, metric=metric, threshold=threshold, evaluation_periods=periods,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                alarm_description=description)
            created.add_alarm_action(alarm_action)
            return created

        self.alarms = [
            # a rate, not the DLQ's depth: FAILED entries stay there (the reconciler reads
            # them), so a depth alarm stayed in ALARM for 14 days after one failure
            alarm("DeadLetterRate",
                  cw.MathExpression(
                      # FILL: in a period with dead letters and no delivery, Delivered has
                      # no datapoint and the sum none either: a total outage never alarmed
                      expression="100 * FILL(dead, 0) / "
                                 "MAX([FILL(dead, 0) + FILL(delivered, 0), 1])",
                      label="dead letters (% of final outcomes)", period=Duration.minutes(5),
                      using_metrics={"dead": emf("worker", "DeadLettered"),
                                     "delivered": emf("worker", "Delivered")}),
                  stage.dead_letter_alarm_percent, periods=3,
                  description="More dead letters than usual: see GET /v1/messages?status=FAILED"),
            alarm("PoisonRedriven", emf("reconciler", "Redriven"), 0,
                  description="The queue dead-lettered an entry whose processing kept "
                              "crashing; its message is FAILED with the reason"),
            # one a shard: a stuck shard is a stuck event source, or a destination whose
            # backlog (held entries go back with a delay, which resets their age) is not it
            *(alarm("OldestMessageAge" if index == 0 else f"OldestMessageAge{index}",
                    queue.metric_approximate_age_of_oldest_message(
                        period=Duration.minutes(1), statistic="Maximum"),
                    stage.oldest_message_alarm.to_seconds(), periods=3,
                    description=f"Work waits longer than a retry hop (15 min) in shard {index} "
                                "of the work queue: its consumers are stuck")
              for index, queue in enumerate(queues.work)),
            alarm("WorkerErrorRate", _error_rate(worker, "worker"), 5, periods=3,
                  description="More than 5 % of worker invocations fail"),
            alarm("ApiErrorRate", _error_rate(api_function, "api"), 1, periods=3,
                  description="More than 1 % of API invocations fail"),
            alarm("WorkerThrottles", worker.metric_throttles(period=Duration.minutes(1),
                                                             statistic="Sum"), 0, periods=5,
                  description="The worker is throttled: its reserved concurrency, or the "
                              "account's, is used up"),
            alarm("ApiThrottles", api_function.metric_throttles(period=Duration.minutes(1),
                                                                statistic="Sum"), 0, periods=3,
                  description="The API Lambda is throttled: submissions get 5xx"),
            alarm("Api5xx", rest_api.metric_server_error(period=Duration.minutes(1),
                                                         statistic="Sum"), 10, periods=3,
                  description="API Gateway answers 5xx"),
            alarm("HttpApi5xx", http_api.metric_server_error(period=Duration.minutes(1),
                                                             statistic="Sum"), 10, periods=3,
                  description="The HTTP API answers 5xx"),
            alarm("FirstAttemptDelay", emf("worker", "FirstAttemptDelay", 1, "p99"),
                  FIRST_ATTEMPT_P99_SECONDS, periods=3,
                  description="p99 from due to first attempt over 10 s: the worker falls "
                              "behind (concurrency, throttles) or destinations hold work"),
            alarm("OutboxBehind", outbox.metric("IteratorAge", statistic="Maximum",
                                                period=Duration.minutes(1)),
                  OUTBOX_AGE_MS, periods=3,
                  description="The outbox queues stored messages more than a minute late "
                              "(SQS refuses, or the function fails): submissions wait; "
                              "after 24 h the stream drops them"),
            alarm("OutboxFailures",
                  queues.outbox_failures.metric_approximate_number_of_messages_visible(
                      period=Duration.minutes(1), statistic="Maximum"), 0,
                  description="The outbox could not queue stream records for 24 h: their "
                              "messages are stored but not queued; the queue holds their "
                              "stream positions (see docs/aws.md, The outbox)"),
            alarm("ReconcilerErrors", reconciler.metric_errors(period=Duration.minutes(1),
                                                              statistic="Sum"), 0, periods=3,
                  description="The reconciler fails: the DLQ sweep waits"),
        ]
        for table in tables:
            # on-demand still throttles a hot partition key (1,000 WRU/s) or a GSI that
            # cannot keep up (the table's writes are then throttled too)
            self.alarms.append(alarm(
                f"Throttles{table.node.id}",
                table.metric_throttled_requests_for_operations(
                    operations=TABLE_OPERATIONS, period=Duration.minutes(1)), 0, periods=3,
                description=f"DynamoDB throttles requests to the {table.node.id} table: a "
                            "hot key or index, or the account's table limits"))

        self.dashboard = cw.Dashboard(self, "Dashboard",
                                      dashboard_name=f"notify-relay-{stage.name}")
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Submissions (API Gateway)",
                           left=[rest_api.metric_count(), rest_api.metric_client_error(),
                                 rest_api.metric_server_error()],
                           right=[rest_api.metric_latency(statistic="p99")]),
            cw.GraphWidget(title="Submissions by result (API Lambda)",
                           left=[emf("api", f"Submissions{result}", 1)
                                 for result in ("Accepted", "Duplicate", "Rejected")]),
            cw.GraphWidget(title="Deliveries",
                           left=[emf("worker", name, 1) for name in (
                               "Delivered", "DeadLettered", "AttemptsRetry", "AttemptsGiveUp")]),
            cw.GraphWidget(title="Queue (each shard), dead letters",
                           left=[*(queue.metric_approximate_number_of_messages_visible(
                                       label=f"shard {index} visible")
                                   for index, queue in enumerate(queues.work)),
                                 queues.dead_letter.metric_approximate_number_of_messages_visible(
                                     label="dead letters")],
                           right=[queue.metric_approximate_age_of_oldest_message(
                                      label=f"shard {index} oldest (s)")
                                  for index, queue in enumerate(queues.work)]),
            cw.GraphWidget(title="Worker Lambda",
                           left=[worker.metric_invocations(), worker.metric_errors(),
                                 worker.metric_throttles()],
                           right=[worker.metric_duration(statistic="p99")]),
            cw.GraphWidget(title="Time to first attempt (s)",
                           left=[emf("worker", "FirstAttemptDelay", 1, stat)
                                 for stat in ("p50", "p99")]),
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24),
        )
