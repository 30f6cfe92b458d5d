"""The message and destination tables (DynamoDB) and the bucket for bodies above the inline
limit (S3)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from notify_relay_infra.config import StageConfig

S = dynamodb.AttributeType.STRING


class Storage(Construct):
    def __init__(self, scope: Construct, id: str, stage: StageConfig) -> None:
        super().__init__(scope, id)
        self.table = dynamodb.Table(
            self, "Messages",
            partition_key=dynamodb.Attribute(name="pk", type=S),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            time_to_live_attribute="expiresAt",
            # the outbox: its Lambda queues each write that marks a message queued
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=stage.removal_policy is RemovalPolicy.RETAIN,
            removal_policy=stage.removal_policy,
        )
        # a sender's list, all and by status: keys sharded by message (sender#n,
        # sender#status#n) so one busy sender is no hot partition; keys only, so that an
        # update writes these indexes only when the status changes, and then a few bytes
        # (see the adapter, src/notify_relay/adapters/aws/dynamodb.py)
        self.table.add_global_secondary_index(
            index_name="bySender", partition_key=dynamodb.Attribute(name="listShard", type=S),
            sort_key=dynamodb.Attribute(name="sortKey", type=S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY)
        self.table.add_global_secondary_index(
            index_name="bySenderStatus",
            partition_key=dynamodb.Attribute(name="statusShard", type=S),
            sort_key=dynamodb.Attribute(name="sortKey", type=S),
            projection_type=dynamodb.ProjectionType.INCLUDE,
            non_key_attributes=["updatedAt"])  # replay filters failures by time
        # sparse: only messages not final carry destPending (<sender>#<destination>#<shard>),
        # counted (Select=COUNT) for a destination's `pending`
        self.table.add_global_secondary_index(
            index_name="destPending",
            partition_key=dynamodb.Attribute(name="destPending", type=S),
            sort_key=dynamodb.Attribute(name="createdAt", type=S),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY)

        # one record per destination (pk sender, sk name) and its in-flight slot leases
        # (pk slot#..., sk "-"): breaker, pause and settings shared by every worker
        self.destinations = dynamodb.Table(
            self, "Destinations",
            partition_key=dynamodb.Attribute(name="pk", type=S),
            sort_key=dynamodb.Attribute(name="sk", type=S),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=stage.removal_policy is RemovalPolicy.RETAIN,
            removal_policy=stage.removal_policy,
        )

        self.bucket = s3.Bucket(
            self, "Bodies",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=False,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-with-the-message",
                                 expiration=stage.body_lifetime),
                s3.LifecycleRule(id="abort-incomplete-uploads",
                                 abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            removal_policy=stage.removal_policy,
            auto_delete_objects=stage.removal_policy is RemovalPolicy.DESTROY,
        )
