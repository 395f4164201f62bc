"""Pre-generation on upload: S3 event notifications (through SQS or straight to Lambda) -> presets."""
