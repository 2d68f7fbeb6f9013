"""The store in an S3 bucket with Object Lock, and what a new S3/SQS deployment needs."""

from worker.backends.s3.store import S3Store

__all__ = ["S3Store"]
