"""Talking to AWS-speaking services (S3, SQS, KMS): one way to make a client, one way to read an error's code.

Imported by the backends, the signing and the master key alike, and importing none of them.
"""

from __future__ import annotations

from worker.errors import ConfigError


def client(service: str, *, region: str | None, endpoint_url: str | None):
    """A boto3 client that retries throttling and 5xx answers with backoff, with bounded waits."""
    import boto3  # only deployments on AWS-speaking services pay for importing it
    from botocore.config import Config

    if not (region or endpoint_url or boto3.session.Session().region_name):
        raise ConfigError(f"no AWS region for {service}: set the region in the settings ([store] region, "
                          "[queue] region, [encryption] kms_region) or AWS_DEFAULT_REGION")
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url,
                        config=Config(retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=10,
                                      read_timeout=60))


def error_code(exc: BaseException) -> str:
    """The service's error code of a botocore ClientError ("NoSuchKey", "404", ...); "" for anything else."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
