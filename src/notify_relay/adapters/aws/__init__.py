"""AWS adapters: DynamoDB store (with S3 for large bodies) and SQS queue. Needs the `aws` extra."""
