"""Creating or checking what a new S3/SQS deployment needs: ``evidence admin init-s3``.

Run once by an administrator (whose role may create buckets and queues;
the workers' role may not): the bucket with versioning and Object Lock,
the job queue with its dead-letter queue, the bucket's notification of
uploads to the queue, and an expiry rule for the upload prefix (uploaded
copies are unmasked footage, kept only until they are stored as evidence).
What exists is checked, never loosened.
"""

from __future__ import annotations

import json
from typing import Any

from worker.aws import error_code
from worker.backends import check_prefixes
from worker.config import Settings
from worker.errors import ConfigError

UPLOAD_EXPIRY_DAYS = 7


def _existing(read, field: str, **kwargs: Any) -> list[dict[str, Any]]:
    try:
        return list(read(**kwargs).get(field, []))
    except Exception as exc:  # noqa: BLE001 - "no configuration yet" has a code per service
        if "NoSuch" in error_code(exc) or "NotFound" in error_code(exc):
            return []
        raise


def _queue(sqs: Any, name: str, attributes: dict[str, str], done: list[str]) -> str:
    """The queue's URL, made with ``attributes`` if new; an existing queue is kept as it is (and said so)."""
    try:
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except Exception as exc:  # noqa: BLE001
        if "QueueNameExists" not in error_code(exc) and "QueueAlreadyExists" not in error_code(exc):
            raise
        done.append(f"queue {name}: exists with other attributes, kept as it is (change it by hand if needed)")
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]


def init_s3(settings: Settings, s3: Any, sqs: Any) -> list[str]:
    """Make or check the bucket, queues and notification the settings name; what was done, line by line."""
    store, queue = settings.store, settings.queue
    if not store.bucket or not queue.queue_name:
        raise ConfigError("init-s3 needs [store] bucket and [queue] queue_name")
    check_prefixes(settings)
    done = []
    try:
        s3.head_bucket(Bucket=store.bucket)
        lock = s3.get_object_lock_configuration(Bucket=store.bucket)["ObjectLockConfiguration"]
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise ConfigError(f"bucket {store.bucket} exists without Object Lock, which cannot be added here: "
                              "make a new bucket")
        done.append(f"bucket {store.bucket}: exists, Object Lock enabled")
    except Exception as exc:  # noqa: BLE001 - botocore raises one ClientError class per code
        if isinstance(exc, ConfigError):
            raise
        if error_code(exc) == "ObjectLockConfigurationNotFoundError":
            raise ConfigError(f"bucket {store.bucket} exists without Object Lock: make a new bucket") from None
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(f"bucket {store.bucket} cannot be checked: {exc}") from None
        where = {"CreateBucketConfiguration": {"LocationConstraint": store.region}} if store.region and \
            store.region != "us-east-1" else {}
        s3.create_bucket(Bucket=store.bucket, ObjectLockEnabledForBucket=True, **where)
        done.append(f"bucket {store.bucket}: created with versioning and Object Lock")
    if store.sse_kms_key_id:
        s3.put_bucket_encryption(Bucket=store.bucket, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": store.sse_kms_key_id},
            "BucketKeyEnabled": True}]})
        done.append(f"bucket {store.bucket}: encrypted by default under KMS key {store.sse_kms_key_id}")
    s3.put_public_access_block(Bucket=store.bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    ours = {"ID": "expire-uploads", "Status": "Enabled", "Filter": {"Prefix": queue.upload_prefix},
            "Expiration": {"Days": UPLOAD_EXPIRY_DAYS}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=store.bucket, LifecycleConfiguration={
        "Rules": [rule for rule in _existing(s3.get_bucket_lifecycle_configuration, "Rules", Bucket=store.bucket)
                  if rule.get("ID") != ours["ID"]] + [ours]})
    done.append(f"uploads under {queue.upload_prefix} expire after {UPLOAD_EXPIRY_DAYS} days (they are copied "
                "into the locked layout first)")

    dead_url = _queue(sqs, f"{queue.queue_name}-dead", {"MessageRetentionPeriod": str(14 * 86400)}, done)
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = _queue(sqs, queue.queue_name, {
        "VisibilityTimeout": str(int(queue.visibility_timeout_s)), "MessageRetentionPeriod": str(14 * 86400),
        # Our own attempt count dead-letters with a reason first; this is the net for workers that die.
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": queue.max_attempts + 2}),
    }, done)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": arn, "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{store.bucket}"}}}]})})
    done.append(f"queue {queue.queue_name} with dead-letter queue {queue.queue_name}-dead")
    current = s3.get_bucket_notification_configuration(Bucket=store.bucket)
    current.pop("ResponseMetadata", None)
    mine = {"Id": "evidence-uploads", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": queue.upload_prefix}]}}}
    current["QueueConfigurations"] = [c for c in current.get("QueueConfigurations", [])
                                      if c.get("Id") != mine["Id"]] + [mine]
    s3.put_bucket_notification_configuration(Bucket=store.bucket, NotificationConfiguration=current)
    done.append(f"uploads to s3://{store.bucket}/{queue.upload_prefix} notify {queue.queue_name}")
    return done
