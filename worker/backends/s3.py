"""S3Store: the EvidenceStore in an S3 bucket with Object Lock (AWS S3, MinIO, Ceph RGW).

The keys are LocalStore's, under an optional prefix:

    <prefix><evidence-id>/original/<stored name>     Object Lock retention, written with If-None-Match: *
    <prefix><evidence-id>/evidence.json              If-None-Match: *
    <prefix><evidence-id>/custody/<seq>.json         one object per event, hash-chained, If-None-Match: *
    <prefix><evidence-id>/runs/<run-id>/run.json     written last: it commits the run and names its attempt
    <prefix><evidence-id>/runs/<run-id>/<attempt>/<name>   the outputs of the attempt that committed

Nothing is ever overwritten or deleted: the worker's role needs neither
right. That is why a run's outputs sit under the attempt that wrote them:
a crashed attempt's objects cannot be replaced or removed by the next one,
so the next one writes beside them and only run.json says which count.
An original is hashed while it is spooled to a private local file, so its
key (its SHA-256) is known before a byte is sent, and S3 checks the
SHA-256 checksum of every part on arrival. Reads stream and re-hash.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from worker import custody
from worker import store as port
from worker.backends.local_intake import ORIGINAL, RECORD, json_bytes
from worker.errors import ConfigError, CustodyError, IntegrityError, NotFound
from worker.fixity import copy_and_hash
from worker.progress import SILENT, Progress
from worker.store import EvidenceStore, RunRecord, Stored
from worker.timestamps import utc_now

log = logging.getLogger("evidence.store.s3")

PART_BYTES = 64 * 2**20          # multipart above this; S3 allows 10,000 parts: 640 GiB
_CUSTODY = "custody"
_APPEND_TRIES = 20               # racing writers of one item's custody: each retry re-reads the head


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3Store(EvidenceStore):
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", retention_mode: str = "COMPLIANCE",
                 retention_days: int = 3650, legal_hold: bool = False, spool_dir: Path | None = None,
                 require_lock: bool = True, sse_kms_key_id: str | None = None):
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention_mode, self.retention_days, self.legal_hold = retention_mode, retention_days, legal_hold
        self.spool_dir = spool_dir
        # Server-side encryption under a KMS key, with an S3 Bucket Key (fewer KMS calls): the provider's disks
        # hold ciphertext. It does not hide footage from the provider itself; client-side encryption will.
        self.encryption = ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse_kms_key_id,
                            "BucketKeyEnabled": True} if sse_kms_key_id else {})
        self.locked = self._preflight(require_lock)

    # -- keys and plumbing --------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _preflight(self, require_lock: bool) -> bool:
        """Bucket there, versioned, Object Lock on; otherwise refuse (or, when allowed, say so loudly)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            try:
                lock = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
                locked = lock.get("ObjectLockEnabled") == "Enabled"
            except Exception as exc:  # noqa: BLE001 - botocore raises a ClientError per code
                if "ObjectLockConfigurationNotFound" not in _code(exc):
                    raise
                locked = False
            self._probe_write_once()
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"[store] bucket {self.bucket!r} cannot be used: {exc}") from None
        if versioning == "Enabled" and locked:
            return True
        problem = f"bucket {self.bucket!r} has " + ("no Object Lock" if versioning == "Enabled" else
                                                     "no versioning and no Object Lock")
        if require_lock:
            raise ConfigError(f"[store] {problem}: originals could be deleted or rewritten, so none is stored. "
                              "Create the bucket with Object Lock ('evidence admin init-s3'), or for development "
                              "only set [store] allow_unlocked_bucket = true")
        log.warning("UNLOCKED BUCKET: originals can be deleted or overwritten; for development only",
                    extra={"bucket": self.bucket, "problem": problem})
        return False

    def _probe_write_once(self) -> None:
        """Refuse a server that ignores If-None-Match: custody and run records rely on it (one small object,
        written once per bucket and prefix, ever)."""
        probe, data = self._key(".write-once-probe"), b"evidence-worker checks that writes are write-once\n"
        sha = hashlib.sha256(data).hexdigest()
        if self._put_once(probe, data, sha, len(data)) and self._put_once(probe, data, sha, len(data)):
            raise ConfigError(f"[store] the server behind bucket {self.bucket!r} ignores If-None-Match (it let an "
                              "object be written twice): custody and run records would not be write-once there")

    def _put_once(self, key: str, body: bytes | BinaryIO, sha256: str, size: int, *, lock: bool = False) -> bool:
        """Write ``key`` unless it exists (False then); S3 checks the SHA-256 of what arrives."""
        extra: dict[str, Any] = dict(self.encryption)
        if lock and self.locked:
            extra["ObjectLockMode"] = self.retention_mode
            extra["ObjectLockRetainUntilDate"] = (dt.datetime.now(dt.timezone.utc)
                                                  + dt.timedelta(days=self.retention_days))
            if self.legal_hold:
                extra["ObjectLockLegalHoldStatus"] = "ON"
        start = body.tell() if not isinstance(body, bytes) else 0
        for attempt in range(4):
            try:
                if isinstance(body, bytes) or size <= PART_BYTES:
                    data = body if isinstance(body, bytes) else body.read()
                    answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                                                    ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(sha256), **extra)
                    if answer.get("ChecksumSHA256") not in (None, _b64(sha256)):
                        raise IntegrityError(f"S3 stored {key} with another SHA-256 than was sent")
                    return True
                return self._multipart(key, body, **extra)
            except Exception as exc:  # noqa: BLE001
                if _code(exc) == "PreconditionFailed":
                    return False   # the key exists: write-once holds, the caller decides what that means
                if _code(exc) != "ConditionalRequestConflict" or attempt == 3:
                    raise
                # Another write to the same key was under way: S3 asks for a retry, which then tells.
                time.sleep(0.2 * 2 ** attempt)
                if not isinstance(body, bytes):
                    body.seek(start)
        raise AssertionError("unreachable")

    def _multipart(self, key: str, body: BinaryIO, **extra: Any) -> bool:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                                                     **extra)["UploadId"]
        try:
            parts = []
            while chunk := body.read(PART_BYTES):   # memory: one part at a time
                number = len(parts) + 1
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
                answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number,
                                                 Body=chunk, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
                parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts}, IfNoneMatch="*")
            return True
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            except Exception:  # noqa: BLE001 - the upload is invisible either way; a lifecycle rule ends it
                pass
            raise

    def _get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"no object {key}") from None
            raise

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _keys(self, prefix: str, delimiter: str | None = None) -> Iterator[str]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            if delimiter:
                yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))
            yield from (o["Key"] for o in page.get("Contents", []))

    def _stream_hash(self, key: str, target: BinaryIO | None, progress: Progress = SILENT) -> tuple[str, int]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"no object {key}") from None
            raise
        try:
            return copy_and_hash(body, target, progress)
        finally:
            body.close()

    # -- originals ----------------------------------------------------------

    def put_original(self, source: BinaryIO, *, intake: Mapping[str, Any], actor: str,
                     size_hint: int | None = None, progress: Progress = SILENT) -> Stored:
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:   # unnamed: gone with the process
            digest, size = copy_and_hash(source, spool, progress)
            record_key = self._key(digest, RECORD)
            try:
                record = json.loads(self._get(record_key))
            except NotFound:
                record = None
            if record is not None:
                if record.get("size") != size:
                    raise IntegrityError(f"the stored original of {digest} is recorded as {record.get('size')} "
                                         f"bytes, not {size}; run 'evidence audit'")
                self.append_custody(digest, custody.DUPLICATE_UPLOAD, actor, {"size": size, **intake})
                return Stored(digest, size, duplicate=True, location=self.location(digest))
            name = port.stored_name(str(intake.get("original_name", "")))
            # An intake that stopped after its original was stored left it under the name it chose then.
            earlier = [key.rsplit("/", 1)[-1] for key in self._keys(self._key(digest, ORIGINAL) + "/")]
            if earlier:
                name = earlier[0]
                self._verified_key(self._key(digest, ORIGINAL, name), digest)
            else:
                spool.seek(0)
                self._put_once(self._key(digest, ORIGINAL, name), spool, digest, size, lock=True)
            record = {**intake, "evidence_id": digest, "sha256": digest, "size": size,
                      "stored_as": f"{ORIGINAL}/{name}", "ingested_at": utc_now(), "ingested_by": actor}
            data = json_bytes(record)
            if not self._put_once(record_key, data, hashlib.sha256(data).hexdigest(), len(data)):
                return Stored(digest, size, duplicate=True, location=self.location(digest))  # a racing intake won
            self.append_custody(digest, custody.INGESTED, actor, {"sha256": digest, "size": size, **intake})
        return Stored(digest, size, duplicate=False, location=self.location(digest))

    def remove_abandoned_uploads(self) -> list[str]:
        return []   # uploads spool to unnamed temporary files, which vanish with their process

    def partial_uploads(self) -> list[str]:
        return []

    def recover(self, actor: str) -> list[str]:
        """An intake whose process stopped after the record but before its event is logged now."""
        done = []
        for evidence_id in self.evidence_ids():
            if not self._exists(self._key(evidence_id, RECORD)):
                continue
            if any(e.get("event") == custody.INGESTED for e in self.custody(evidence_id).events):
                continue
            chain = self.custody(evidence_id)
            record = self.evidence(evidence_id)
            logged = {k: v for k, v in record.items() if k not in ("evidence_id", "stored_as", "ingested_at",
                                                                   "ingested_by")}
            # At the next sequence number only: a worker starting beside this one may be doing the same.
            if self._append_at(evidence_id, chain, custody.INGESTED, actor, {
                    **logged, "recovered": "the storing process stopped before logging the intake"}):
                done.append(f"{evidence_id}: completed an intake that stopped before it was logged")
        return done

    def _original_key(self, evidence_id: str) -> str:
        stored_as = str(self.evidence(evidence_id).get("stored_as", ""))
        if not stored_as.startswith(f"{ORIGINAL}/"):
            raise IntegrityError(f"evidence.json of {evidence_id} does not name its original")
        return self._key(evidence_id, stored_as)

    def _verified_key(self, key: str, evidence_id: str, progress: Progress = SILENT) -> None:
        digest, _ = self._stream_hash(key, None, progress)
        if digest != evidence_id:
            raise IntegrityError(f"the original of {evidence_id} fails its SHA-256 check (its bytes now hash to "
                                 f"{digest}) in s3://{self.bucket}/{key}")

    def _download(self, key: str, dest: Path, expected: str, problem: str, progress: Progress = SILENT) -> Path:
        """``key`` streamed into the new file ``dest`` (read-only once whole), or no file and IntegrityError
        naming ``problem`` when it does not hash to ``expected``."""
        dest = Path(dest)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                digest, _ = self._stream_hash(key, handle, progress)
                os.fchmod(handle.fileno(), 0o400)
            if digest != expected:
                raise IntegrityError(f"{problem} (its bytes now hash to {digest}) in s3://{self.bucket}/{key}")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def fetch_original(self, evidence_id: str, dest: Path, progress: Progress = SILENT) -> Path:
        return self._download(self._original_key(evidence_id), dest, evidence_id,
                              f"the original of {evidence_id} fails its SHA-256 check", progress)

    def original_for_run(self, evidence_id: str, work: Path, progress: Progress = SILENT) -> Path:
        name = self._original_key(evidence_id).rsplit("/", 1)[-1]
        return self.fetch_original(evidence_id, Path(work) / name, progress)

    def verify_original(self, evidence_id: str, progress: Progress = SILENT) -> None:
        self._verified_key(self._original_key(evidence_id), evidence_id, progress)

    def evidence(self, evidence_id: str) -> dict[str, Any]:
        if not port.EVIDENCE_ID.match(evidence_id):
            raise NotFound(f"{evidence_id!r} is not an evidence id")
        try:
            return json.loads(self._get(self._key(evidence_id, RECORD)))
        except NotFound:
            raise NotFound(f"no evidence item {evidence_id} (its intake is incomplete)") from None

    def evidence_ids(self) -> list[str]:
        found = (key[len(self.prefix):].rstrip("/") for key in self._keys(self.prefix, "/"))
        return sorted(name for name in found if port.EVIDENCE_ID.match(name))

    # -- custody ------------------------------------------------------------

    def _events(self, evidence_id: str) -> list[tuple[str, bytes]]:
        keys = sorted(self._keys(self._key(evidence_id, _CUSTODY) + "/"))
        return [(key, self._get(key)) for key in keys]

    def append_custody(self, evidence_id: str, event: str, actor: str, details: Mapping[str, Any],
                       *, recover: bool = True) -> dict:
        for _ in range(_APPEND_TRIES):
            chain = self.custody(evidence_id)
            if chain.problems and chain.count:
                raise CustodyError(f"the custody log of {evidence_id} is damaged ({'; '.join(chain.problems[:2])});"
                                   " nothing is appended: run 'evidence audit'")
            new = self._append_at(evidence_id, chain, event, actor, details)
            if new is not None:
                return new
        raise CustodyError(f"could not append to the custody log of {evidence_id}: too many concurrent writers")

    def _append_at(self, evidence_id: str, chain: custody.ChainReport, event: str, actor: str,
                   details: Mapping[str, Any]) -> dict | None:
        """The event after ``chain``'s head, or None when another writer took that place first."""
        new = custody.new_event(chain.events[-1] if chain.events else None, event=event,
                                evidence_id=evidence_id, actor=actor, details=details)
        data = custody.encode(new)
        # The sequence number is the key: of two writers racing for it, S3 lets exactly one in.
        if self._put_once(self._key(evidence_id, _CUSTODY, f"{new['seq']:012d}.json"), data,
                          hashlib.sha256(data).hexdigest(), len(data)):
            return new
        return None

    def acknowledge_custody_damage(self, evidence_id: str, actor: str, reason: str) -> dict:
        raise CustodyError("acknowledging damaged custody in an S3 store is not supported yet; a person must look "
                           f"at s3://{self.bucket}/{self._key(evidence_id, _CUSTODY)}/")

    def custody(self, evidence_id: str) -> custody.ChainReport:
        events = self._events(evidence_id)
        report = custody.verify_chain(b"".join(data for _, data in events), evidence_id)
        for number, (key, data) in enumerate(events):
            if not key.endswith(f"/{number:012d}.json") or data.count(b"\n") != 1:
                report.problems.append(f"custody object {key} is not event {number} (a gap, or an edited object)")
        if not events:
            report.problems.append("the custody log is missing or empty")
        return report

    # -- runs ---------------------------------------------------------------

    def _record(self, evidence_id: str, run_id: str) -> dict[str, Any]:
        return json.loads(self._get(self._key(evidence_id, "runs", port.check_run_id(run_id), port.RUN_RECORD)))

    def is_committed(self, evidence_id: str, run_id: str) -> bool:
        return self._exists(self._key(evidence_id, "runs", port.check_run_id(run_id), port.RUN_RECORD))

    def _commit_new_run(self, evidence_id: str, run_id: str, files: Mapping[str, Path],
                        record: Mapping[str, Any]) -> RunRecord | None:
        attempt = f"attempt-{secrets.token_hex(6)}"
        outputs = {}
        for name, source in sorted(files.items()):
            with open(source, "rb") as handle:
                digest, size = copy_and_hash(handle, None)
                handle.seek(0)
                self._put_once(self._key(evidence_id, "runs", run_id, attempt, name), handle, digest, size)
            outputs[name] = {"sha256": digest, "size": size}
        full = {**record, "outputs": outputs, "committed_at": utc_now(), "attempt": attempt}
        data = json_bytes(full)
        if not self._put_once(self._key(evidence_id, "runs", run_id, port.RUN_RECORD), data,
                              hashlib.sha256(data).hexdigest(), len(data)):
            return None   # another attempt committed this run first; keep theirs
        return RunRecord(full, hashlib.sha256(data).hexdigest())

    def discard_uncommitted(self, evidence_id: str, run_id: str) -> None:
        pass   # nothing can be deleted; a crashed attempt's objects stay beside the committed one, unreferenced

    def run_records(self, evidence_id: str) -> list[RunRecord]:
        records = []
        for key in self._keys(self._key(evidence_id, "runs") + "/"):
            parts = key[len(self._key(evidence_id, "runs")) + 1:].split("/")
            if len(parts) == 2 and parts[1] == port.RUN_RECORD:
                data = self._get(key)
                records.append(RunRecord(json.loads(data), hashlib.sha256(data).hexdigest()))
        return sorted(records, key=lambda r: str(r.record.get("committed_at", "")))

    def _output_key(self, evidence_id: str, run_id: str, name: str) -> str:
        if not self.is_committed(evidence_id, run_id):
            raise NotFound(f"run {run_id} of {evidence_id} is not committed")
        if not port.OUTPUT_NAME.match(name):
            raise NotFound(f"{name!r} is not an output name")
        attempt = str(self._record(evidence_id, run_id).get("attempt", ""))
        return self._key(evidence_id, "runs", run_id, attempt, name)

    def read_output(self, evidence_id: str, run_id: str, name: str) -> bytes:
        try:
            return self._get(self._output_key(evidence_id, run_id, name))
        except NotFound:
            raise NotFound(f"run {run_id} has no output {name!r}") from None

    def fetch_output(self, evidence_id: str, run_id: str, name: str, dest: Path, *, expected_sha256: str) -> Path:
        return self._download(self._output_key(evidence_id, run_id, name), dest, expected_sha256,
                              f"{name} of run {run_id} no longer matches the SHA-256 its run.json records")

    def hash_output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, int]:
        return self._stream_hash(self._output_key(evidence_id, run_id, name), None)

    def uncommitted_leftovers(self, evidence_id: str) -> list[str]:
        return []   # attempts that never committed are unreferenced by any run.json; see discard_uncommitted

    def location(self, evidence_id: str, run_id: str | None = None) -> str:
        return f"s3://{self.bucket}/{self._key(evidence_id, *(['runs', run_id] if run_id else []))}"

    def exposure(self) -> list[str]:
        return [] if self.locked else [f"bucket {self.bucket} has no Object Lock: originals can be deleted"]
