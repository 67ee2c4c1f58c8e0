"""Infrastructure the domain talks to through small interfaces: evidence and package storage (local
disk or S3 with Object Lock), mail (SMTP), OpenDSR status webhooks and the SQS intake queue."""
