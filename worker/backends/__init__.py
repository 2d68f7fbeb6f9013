"""The store and queue the settings name."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from worker import aws
from worker.backends.local import LocalStore
from worker.backends.sqlite import SqliteQueue
from worker.config import Settings, StoreSettings
from worker.encryption.envelope import MasterKey
from worker.encryption.sealing import PLAIN, Sealing
from worker.errors import ConfigError
from worker.fs.directory import PRIVATE_DIR, Directory
from worker.jobs.queue import JobQueue
from worker.record.store import EvidenceStore

log = logging.getLogger("evidence.backends")


# What this software keeps directly in its home; a home holding anything else is not only its own.
_OWN_NAMES = {"store", "work", "queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm"}


def _not_only_ours(info: os.stat_result) -> bool:
    return info.st_uid != os.geteuid() or stat.S_ISLNK(info.st_mode) or bool(info.st_mode & 0o022)


def secure_home(settings: Settings) -> None:
    """EVIDENCE_HOME exists and is owner-only (0700), whatever the umask.

    A looser home that holds only this software's own files is tightened, with
    a warning; a shared folder (/tmp, /srv, sticky, someone else's, holding
    other files) is never changed: it is refused, and the operator chooses.
    """
    with Directory.open(settings.home, create=True) as home:
        info = os.fstat(home.fd)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.geteuid():
            raise ConfigError(f"EVIDENCE_HOME {settings.home} belongs to another account (uid {info.st_uid}): "
                              "point EVIDENCE_HOME at a folder of this account's own")
        if not mode & 0o077:
            return
        names = set(home.names())
        others = sorted(names - _OWN_NAMES)
        # Anything another account could have made while the home stood open: it would stay in its hands.
        planted = sorted(name for name in names & _OWN_NAMES if _not_only_ours(home.lstat(name)))
        if mode & stat.S_ISVTX or others or planted:
            why = (f"{', '.join(planted[:3])} in it belong to another account, are links or are writable by others"
                   if planted else
                   f"it holds {', '.join(others[:3])}" if others else "it is shared (sticky)")
            raise ConfigError(
                f"EVIDENCE_HOME {settings.home} is open to other accounts (mode {mode:04o}) and {why}: point "
                "EVIDENCE_HOME at a folder of its own (it is created owner-only), or make this one owner-only "
                "(chmod 700) after checking what is in it"
            )
        os.fchmod(home.fd, PRIVATE_DIR)
        log.warning("made the evidence home owner-only", extra={"home": str(settings.home),
                                                                 "was": f"{mode:04o}", "now": "0700"})


def check_prefixes(settings: Settings) -> None:
    """Uploads and evidence kept apart: an expiry rule for uploads must never reach evidence, and the worker
    must never take its own writes for uploads."""
    upload, store = settings.queue.upload_prefix, settings.store.prefix.strip("/")
    if not upload.strip("/") or not upload.endswith("/"):
        raise ConfigError("[queue] upload_prefix must be a folder such as \"incoming/\", never the whole bucket")
    if store and (f"{store}/".startswith(upload) or upload.startswith(f"{store}/")):
        raise ConfigError(f"[queue] upload_prefix {upload!r} and [store] prefix {store!r} overlap: keep uploads "
                          "and evidence apart")


def open_store(settings: Settings, key: MasterKey | None) -> EvidenceStore:
    """The primary store, sealed under ``key`` (the command's master key, loaded once where it starts)."""
    secure_home(settings)
    return _open(settings, settings.store, settings.store_root, key)


def open_replica(settings: Settings, name: str, key: MasterKey | None) -> EvidenceStore:
    """The store of the [[replicas]] entry ``name``, under the same master key as the primary."""
    replica = settings.replica(name)
    return _open(settings, replica, replica.root, key)


def _open(settings: Settings, s: StoreSettings, root: Path | None, key: MasterKey | None) -> EvidenceStore:
    if s.backend == "s3":
        from worker.backends.s3 import S3Store

        if not s.bucket:
            raise ConfigError("[store] backend = \"s3\" needs bucket")
        Directory.open(settings.work_dir, create=True).close()
        return S3Store(aws.client("s3", region=s.region, endpoint_url=s.endpoint_url), s.bucket, prefix=s.prefix,
                       retention_mode=s.retention_mode, retention_days=s.retention_days, legal_hold=s.legal_hold,
                       spool_dir=settings.work_dir, require_lock=not s.allow_unlocked_bucket,
                       sse_kms_key_id=s.sse_kms_key_id, key=key)
    return LocalStore(root, min_free_bytes=s.min_free_bytes, key=key)


def open_queue(settings: Settings, sealing: Sealing, *, read_only: bool = False) -> JobQueue:
    """``sealing``: the open store's (``queue_sealing`` without one): the queue names the same items the store
    hides. ``read_only``: for commands that only look (status, listings), which then work on a full disk too."""
    q = settings.queue
    if q.backend == "sqs":
        from worker.backends.sqs import SqsQueue

        check_prefixes(settings)
        if not 1 <= q.visibility_timeout_s <= 43200:
            raise ConfigError("[queue] visibility_timeout_s must be 1 to 43200 (12 h, SQS's limit) with SQS")

        client = aws.client("sqs", region=q.region, endpoint_url=q.endpoint_url)
        if not (q.queue_url or q.queue_name):
            raise ConfigError("[queue] backend = \"sqs\" needs queue_name or queue_url")
        try:
            url = q.queue_url or client.get_queue_url(QueueName=q.queue_name)["QueueUrl"]
        except Exception as exc:  # noqa: BLE001 - botocore's errors: no such queue, refused credentials
            raise ConfigError(f"[queue] SQS queue {q.queue_name!r} cannot be used: {exc}") from None
        return SqsQueue(client, url, max_attempts=q.max_attempts, backoff_base_s=q.backoff_base_s,
                        backoff_max_s=q.backoff_max_s, wait_s=q.wait_time_s, upload_prefix=q.upload_prefix,
                        upload_bucket=settings.store.bucket, sealing=sealing)
    return SqliteQueue(settings.queue_path, max_attempts=q.max_attempts, backoff_base_s=q.backoff_base_s,
                       backoff_max_s=q.backoff_max_s, read_only=read_only, sealing=sealing)


def queue_sealing(settings: Settings, key: MasterKey | None) -> Sealing:
    """The store's keys, for a command that opens the queue alone."""
    return open_store(settings, key).sealing if key is not None else PLAIN


def open_uploads(settings: Settings):
    """Opens an uploaded object (bucket, key) for reading: for upload events from S3, else None."""
    if settings.queue.backend != "sqs":
        return None
    s = settings.store
    client = aws.client("s3", region=s.region, endpoint_url=s.endpoint_url)
    def open_upload(bucket: str, key: str, version: str | None = None):
        # The version the event named: a camera's next VID_0001.mp4 must not stand in for this one.
        return client.get_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))["Body"]

    return open_upload
