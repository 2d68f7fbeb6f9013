"""Objects in the bucket, as the store needs them: written once (If-None-Match, SHA-256 checked by S3 on
arrival, multipart above PART_BYTES, locked when asked), read whole or streamed and re-hashed, listed.

A part of S3Store (its base class), which gives it the client, the bucket, the sealing and the lock settings.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from worker.aws import error_code
from worker.errors import ConfigError, IntegrityError, NotFound
from worker.progress import SILENT, Progress
from worker.record.fixity import copy_and_hash

PART_BYTES = 64 * 2**20          # multipart above this; S3 allows 10,000 parts: 640 GiB


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


class _HashingWriter:
    """Passes writes on to ``target``, hashing them: what is spooled is known without reading it back."""

    def __init__(self, target: BinaryIO):
        self.target, self.sha256, self.size = target, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)


class BucketObjects:
    """The object half of S3Store."""

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
                if error_code(exc) == "PreconditionFailed":
                    return False   # the key exists: write-once holds, the caller decides what that means
                if error_code(exc) != "ConditionalRequestConflict" or attempt == 3:
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
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"no object {key}") from None
            raise

    def _get_sealed(self, key: str, what: bytes) -> bytes:
        """The plaintext of ``key``; IntegrityError when it does not open as ``what``."""
        return self.sealing.open_bytes(self._get(key), what)

    def _put_sealed(self, key: str, data: bytes, what: bytes) -> bool:
        """``data`` written once to ``key`` (False when it exists), sealed as ``what`` when encryption is on."""
        stored = self.sealing.seal_bytes(data, what)
        return self._put_once(key, stored, hashlib.sha256(stored).hexdigest(), len(stored))

    def _spool(self, source: BinaryIO, spool: BinaryIO, what: bytes,
               progress: Progress = SILENT) -> tuple[tuple[str, int], tuple[str, int]]:
        """An original or an output copied into ``spool`` as it is sent (sealed as ``what``, and padded so
        that its size does not tell which known video it is, when encryption is on).

        Returns the SHA-256 and size of the plaintext and of what is sent:
        S3 checks the latter, and wants it before the first byte.
        """
        if not self.sealing.enabled:
            plain = copy_and_hash(source, spool, progress)
            return plain, plain
        sent = _HashingWriter(spool)
        with self.sealing.writer(sent, what, media=True) as sink:   # type: ignore[arg-type]
            plain = copy_and_hash(source, sink, progress)
        return plain, (sent.sha256.hexdigest(), sent.size)

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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

    def _body(self, key: str) -> Any:
        """``key``'s content as a stream (botocore's, with readinto); the caller closes it."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound(f"no object {key}") from None
            raise

    def _stream_hash(self, key: str, target: BinaryIO | None, what: bytes,
                     progress: Progress = SILENT) -> tuple[str, int]:
        """SHA-256 and size of ``key``'s plaintext (opened as ``what``), streamed into ``target`` if given."""
        body = self._body(key)
        try:
            return copy_and_hash(self.sealing.reader(body, what), target, progress)
        except IntegrityError as exc:   # only a sealed object's reader raises it
            raise IntegrityError(f"s3://{self.bucket}/{key} does not decrypt ({exc}): it was altered, or is "
                                 "another object than the one asked for") from None
        finally:
            body.close()
