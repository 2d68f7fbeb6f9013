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
A run copied from another store (a replica) keeps that store's run.json
byte for byte: its outputs sit under the attempt it names, or directly
under the run when it came from a local store, which has no attempts.
An original is hashed while it is spooled to a private local file, so its
key (its SHA-256) is known before a byte is sent, and S3 checks the
SHA-256 checksum of every part on arrival. Reads stream and re-hash.

With a master key (worker.encryption.sealing) every object is sealed on
this side before it is sent, each bound to what it is (its context); an
item's prefix is a keyed hash of its evidence id, a run's of its run id,
and a sealed ``item.id`` (written first) says which item a prefix holds;
the original is stored as ``original.sealed``. The spool then holds ciphertext only; the original is
hashed as plaintext on the way in and re-hashed after decryption on every
read. The store's keyring is ``<prefix>keyring.sealed``, written once.
Server-side encryption under KMS, when configured, wraps the ciphertext again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from worker.aws import error_code
from worker.backends.layout import CUSTODY, ITEM_ID, ORIGINAL, ORIGINAL_CONTEXT, RECORD, SEALED_ORIGINAL, record_context
from worker.backends.s3.objects import BucketObjects
from worker.backends.s3.runs import S3Runs
from worker.backends.s3.signing_set import S3SigningSet
from worker.backends.s3.stamps import S3Stamps
from worker.encryption.envelope import MasterKey
from worker.encryption.sealing import KEYRING, Sealing, context, open_keyring
from worker.errors import ConfigError, CustodyError, EvidenceError, IntegrityError, NotFound
from worker.progress import SILENT, Progress
from worker.record import custody
from worker.record import store as port
from worker.record.store import EvidenceStore, Stored, json_bytes
from worker.record.timestamps import utc_now

log = logging.getLogger("evidence.store.s3")

_APPEND_TRIES = 20               # racing writers of one item's custody: each retry re-reads the head
# Put in a custody object's place when it does not open, so that the chain check sees a damaged event there.
_UNOPENED = b"(a sealed custody object that does not open)\n"


def _custody_context(evidence_id: str, number: str) -> bytes:
    """An event bound to its place (the object's number): moved to another sequence number, it does not open."""
    return context(evidence_id, CUSTODY, number)


class S3Store(S3Runs, S3Stamps, S3SigningSet, BucketObjects, EvidenceStore):
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", retention_mode: str = "COMPLIANCE",
                 retention_days: int = 3650, legal_hold: bool = False, spool_dir: Path | None = None,
                 require_lock: bool = True, sse_kms_key_id: str | None = None, key: MasterKey | None = None):
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention_mode, self.retention_days, self.legal_hold = retention_mode, retention_days, legal_hold
        self.spool_dir = spool_dir
        # Server-side encryption under a KMS key, with an S3 Bucket Key (fewer KMS calls): the provider's disks
        # hold ciphertext. It does not hide footage from the provider itself; a master key (``key``) does.
        self.encryption = ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse_kms_key_id,
                            "BucketKeyEnabled": True} if sse_kms_key_id else {})
        self.locked = self._preflight(require_lock)
        keyring = self._key(KEYRING)
        self.sealing: Sealing = open_keyring(
            key, read=self._stored_keyring,
            # Locked like an original: under Object Lock it can be neither deleted nor replaced (reads take the
            # first version ever written, so a later version put on top changes nothing).
            write_once=lambda data: self._put_once(keyring, data, hashlib.sha256(data).hexdigest(), len(data),
                                                   lock=True),
            holds_items=lambda: next(self._item_names(), None) is not None,
            where=f"the store s3://{self.bucket}/{self.prefix}", holds_sealed_items=self._holds_sealed_items)

    # -- keys and plumbing --------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _item_key(self, evidence_id: str, *parts: str) -> str:
        """The key of an item's object: under its evidence id, or under a keyed hash of it when sealed."""
        if not port.EVIDENCE_ID.match(evidence_id):   # never a key of someone's choosing
            raise NotFound(f"{evidence_id!r} is not an evidence id")
        return self._key(self.sealing.item_name(evidence_id), *parts)

    def _item_names(self) -> Iterator[str]:
        """The item prefixes under the store's prefix (evidence ids, or their keyed hashes when sealed)."""
        found = (key[len(self.prefix):].rstrip("/") for key in self._keys(self.prefix, "/"))
        return (name for name in found if port.EVIDENCE_ID.match(name))

    def _keyring_versions(self) -> list[dict[str, Any]]:
        """Every version and delete marker the keyring ever had, oldest first."""
        key, found = self._key(KEYRING), []
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
            found += [v for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if v["Key"] == key]
        return sorted(found, key=lambda v: v["LastModified"])

    def _holds_sealed_items(self) -> bool:
        # A keyring that was ever there (now deleted or hidden) means a sealed store. Otherwise a store is sealed
        # throughout or not at all: its first item tells, and a start does not cost a request per item.
        if self._keyring_versions():
            return True
        first = next(self._item_names(), None)
        return first is not None and self._exists(self._key(first, ITEM_ID))

    def _stored_keyring(self) -> bytes | None:
        """The first keyring ever written (a version put on top later, by anyone, is not the store's)."""
        versions = [v for v in self._keyring_versions() if "Size" in v]   # delete markers have no size
        if not versions:
            return None
        return self.client.get_object(Bucket=self.bucket, Key=self._key(KEYRING),
                                      VersionId=versions[0]["VersionId"])["Body"].read()

    def _preflight(self, require_lock: bool) -> bool:
        """Bucket there, versioned, Object Lock on; otherwise refuse (or, when allowed, say so loudly)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            try:
                lock = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
                locked = lock.get("ObjectLockEnabled") == "Enabled"
            except Exception as exc:  # noqa: BLE001 - botocore raises a ClientError per code
                if "ObjectLockConfigurationNotFound" not in error_code(exc):
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

    # -- originals ----------------------------------------------------------

    def put_original(self, source: BinaryIO, *, intake: Mapping[str, Any], actor: str,
                     size_hint: int | None = None, progress: Progress = SILENT) -> Stored:
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:   # unnamed: gone with the process
            (digest, size), sent = self._spool(source, spool, ORIGINAL_CONTEXT, progress)
            record_key = self._item_key(digest, RECORD)
            try:
                record = json.loads(self._get_sealed(record_key, record_context(digest)))
            except NotFound:
                record = None
            if record is not None:
                if record.get("size") != size:
                    raise IntegrityError(f"the stored original of {digest} is recorded as {record.get('size')} "
                                         f"bytes, not {size}; run 'evidence audit'")
                self.append_custody(digest, custody.DUPLICATE_UPLOAD, actor, {"size": size, **intake})
                return Stored(digest, size, duplicate=True, location=self.location(digest))
            self._claim(digest)
            # Sealed, even the uploader's extension stays in the (sealed) record only.
            name = SEALED_ORIGINAL if self.sealing.enabled else port.stored_name(str(intake.get("original_name", "")))
            # An intake that stopped after its original was stored left it under the name it chose then.
            earlier = [key.rsplit("/", 1)[-1] for key in self._keys(self._item_key(digest, ORIGINAL) + "/")]
            if earlier:
                name = earlier[0]
                self._verified_key(self._item_key(digest, ORIGINAL, name), digest)
            else:
                spool.seek(0)
                self._put_once(self._item_key(digest, ORIGINAL, name), spool, *sent, lock=True)
            record = {**intake, "evidence_id": digest, "sha256": digest, "size": size,
                      "stored_as": f"{ORIGINAL}/{name}", "ingested_at": utc_now(), "ingested_by": actor}
            if not self._put_sealed(record_key, json_bytes(record), record_context(digest)):
                # A racing intake won, or someone planted an object there: only a record that opens counts.
                theirs = self.evidence(digest)
                if theirs.get("sha256") != digest or theirs.get("size") != size:
                    raise IntegrityError(f"the intake record of {digest} in the bucket is not this item's")
                return Stored(digest, size, duplicate=True, location=self.location(digest))
            self.append_custody(digest, custody.INGESTED, actor, {"sha256": digest, "size": size, **intake})
        return Stored(digest, size, duplicate=False, location=self.location(digest))

    def _claim(self, evidence_id: str) -> None:
        """Sealed, an item's first object says which evidence id its prefix (a keyed hash) stands for."""
        if self.sealing.enabled:
            name = self.sealing.item_name(evidence_id)
            # False when there already: an earlier intake of the same bytes wrote it, before anything else.
            self._put_sealed(self._key(name, ITEM_ID), evidence_id.encode("ascii"), context(ITEM_ID, name))

    def _identify(self, name: str) -> str | None:
        """The evidence id a sealed item prefix holds (None when it cannot be told: then it is reported)."""
        try:
            evidence_id = self._get_sealed(self._key(name, ITEM_ID), context(ITEM_ID, name)).decode("ascii")
        except (NotFound, IntegrityError, UnicodeDecodeError):
            return None
        if port.EVIDENCE_ID.match(evidence_id) and self.sealing.item_name(evidence_id) == name:
            return evidence_id
        return None

    def _items(self) -> dict[str, str | None]:
        """Each item prefix and the evidence id it holds (None: a sealed prefix that cannot be told)."""
        if not self.sealing.enabled:
            return {name: name for name in self._item_names()}
        return {name: self._identify(name) for name in self._item_names()}

    def remove_abandoned_uploads(self) -> list[str]:
        return []   # uploads spool to unnamed temporary files, which vanish with their process

    def partial_uploads(self) -> list[str]:
        return []

    def recover(self, actor: str) -> list[str]:
        """An intake whose process stopped after the record but before its event is logged now."""
        done = []
        for evidence_id in self.evidence_ids():
            try:
                what = self._complete_intake(evidence_id, actor)
            except EvidenceError as exc:   # one damaged item must not keep the worker from starting
                what = f"could not be recovered: {exc}"
                log.error("item could not be recovered", extra={"evidence_id": evidence_id, "reason": str(exc)})
            if what:
                done.append(f"{evidence_id}: {what}")
        return done

    def _complete_intake(self, evidence_id: str, actor: str) -> str | None:
        if not self._exists(self._item_key(evidence_id, RECORD)):
            return None
        chain = self.custody(evidence_id)
        if chain.events or chain.count:
            return None   # logged (or a copy's chain under way): only an intake with no event at all is ours
        record = self.evidence(evidence_id)
        logged = {k: v for k, v in record.items() if k not in ("evidence_id", "stored_as", "ingested_at",
                                                               "ingested_by")}
        # At the next sequence number only: a worker starting beside this one may be doing the same.
        if self._append_at(evidence_id, chain, custody.INGESTED, actor, {
                **logged, "recovered": "the storing process stopped before logging the intake"}):
            return "completed an intake that stopped before it was logged"
        return None

    def _original_key(self, evidence_id: str) -> str:
        stored_as = str(self.evidence(evidence_id).get("stored_as", ""))
        if not stored_as.startswith(f"{ORIGINAL}/"):
            raise IntegrityError(f"evidence.json of {evidence_id} does not name its original")
        return self._item_key(evidence_id, stored_as)

    def _verified_key(self, key: str, evidence_id: str, progress: Progress = SILENT) -> None:
        digest, _ = self._stream_hash(key, None, ORIGINAL_CONTEXT, progress)
        if digest != evidence_id:
            raise IntegrityError(f"the original of {evidence_id} fails its SHA-256 check (its bytes now hash to "
                                 f"{digest}) in s3://{self.bucket}/{key}")

    def _download(self, key: str, dest: Path, what: bytes, expected: str, problem: str,
                  progress: Progress = SILENT) -> Path:
        """``key``'s plaintext (opened as ``what``) streamed into the new file ``dest`` (read-only once whole),
        or no file and IntegrityError naming ``problem`` when it does not hash to ``expected``."""
        dest = Path(dest)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                digest, _ = self._stream_hash(key, handle, what, progress)
                os.fchmod(handle.fileno(), 0o400)
            if digest != expected:
                raise IntegrityError(f"{problem} (its bytes now hash to {digest}) in s3://{self.bucket}/{key}")
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def fetch_original(self, evidence_id: str, dest: Path, progress: Progress = SILENT) -> Path:
        return self._download(self._original_key(evidence_id), dest, ORIGINAL_CONTEXT, evidence_id,
                              f"the original of {evidence_id} fails its SHA-256 check", progress)

    def original_for_run(self, evidence_id: str, work: Path, progress: Progress = SILENT) -> Path:
        # Sealed, the stored name says nothing: the steps get the uploader's extension from the record.
        name = (port.stored_name(str(self.evidence(evidence_id).get("original_name", ""))) if self.sealing.enabled
                else self._original_key(evidence_id).rsplit("/", 1)[-1])
        return self.fetch_original(evidence_id, Path(work) / name, progress)

    def verify_original(self, evidence_id: str, progress: Progress = SILENT) -> None:
        self._verified_key(self._original_key(evidence_id), evidence_id, progress)

    def has_original(self, evidence_id: str) -> bool:
        return next(self._keys(self._item_key(evidence_id, ORIGINAL) + "/"), None) is not None

    @contextmanager
    def open_original(self, evidence_id: str) -> Iterator[BinaryIO]:
        body = self._body(self._original_key(evidence_id))
        try:
            yield self.sealing.reader(body, ORIGINAL_CONTEXT)
        finally:
            body.close()

    def adopt_original(self, evidence_id: str, source: BinaryIO, record: Mapping[str, Any],
                       progress: Progress = SILENT) -> bool:
        if self.has_original(evidence_id):
            return False
        stored_as = str(record.get("stored_as", ""))
        name = stored_as.removeprefix(f"{ORIGINAL}/")
        if name == stored_as or not port.OUTPUT_NAME.match(name):
            raise IntegrityError(f"the intake record of {evidence_id} does not name its original; nothing was stored")
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:   # unnamed: gone with the process
            (digest, _), sent = self._spool(source, spool, ORIGINAL_CONTEXT, progress)
            if digest != evidence_id:
                raise IntegrityError(f"the copy of {evidence_id} hashes to {digest}: the source gave other bytes; "
                                     "nothing was stored")
            self._claim(evidence_id)
            # The record first, as a local store does: a copy cut off before its original is completed by the
            # next one, which finds the same record here.
            data = json_bytes(record)
            if not self._put_sealed(self._item_key(evidence_id, RECORD), data, record_context(evidence_id)) \
                    and json_bytes(self.evidence(evidence_id)) != data:
                raise IntegrityError(f"{evidence_id} has another intake record here than in the source")
            spool.seek(0)
            # Under the name the record gives: that is where reads look for it.
            return self._put_once(self._item_key(evidence_id, ORIGINAL, name), spool, *sent, lock=True)

    def evidence(self, evidence_id: str) -> dict[str, Any]:
        if not port.EVIDENCE_ID.match(evidence_id):
            raise NotFound(f"{evidence_id!r} is not an evidence id")
        try:
            return json.loads(self._get_sealed(self._item_key(evidence_id, RECORD), record_context(evidence_id)))
        except NotFound:
            raise NotFound(f"no evidence item {evidence_id} (its intake is incomplete)") from None

    def evidence_ids(self) -> list[str]:
        """Items with anything stored or logged; a sealed prefix an intake left with only its item.id is none."""
        items = self._items().items()
        return sorted(evidence_id for name, evidence_id in items
                      if evidence_id and (not self.sealing.enabled or self._holds_more_than_its_id(name)))

    def _holds_more_than_its_id(self, name: str) -> bool:
        # Keys list in order; of the first two, one is not item.id whenever anything else is there.
        first = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(name) + "/", MaxKeys=2)
        return any(found["Key"] != self._key(name, ITEM_ID) for found in first.get("Contents", []))

    # -- custody ------------------------------------------------------------

    def _events(self, evidence_id: str) -> list[tuple[str, bytes | None]]:
        """Each custody object's key and its event as written (None: a sealed object that does not open)."""
        keys = sorted(self._keys(self._item_key(evidence_id, CUSTODY) + "/"))
        return [(key, self._open_event(evidence_id, key)) for key in keys]

    def _open_event(self, evidence_id: str, key: str) -> bytes | None:
        number = key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            return self._get_sealed(key, _custody_context(evidence_id, number))
        except IntegrityError:
            return None

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
        number = f"{new['seq']:012d}"
        # The sequence number is the key: of two writers racing for it, S3 lets exactly one in.
        if self._put_sealed(self._item_key(evidence_id, CUSTODY, f"{number}.json"), custody.encode(new),
                            _custody_context(evidence_id, number)):
            return new
        return None

    def adopt_custody(self, evidence_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        have = [None if data is None else custody.parse(data) for _, data in self._events(evidence_id)]
        if len(have) > len(events) or any(mine is None or mine.get("hash") != theirs.get("hash")
                                          for mine, theirs in zip(have, events, strict=False)):
            raise CustodyError(f"the custody log of {evidence_id} here is not the start of the source's: the copies "
                               "have diverged; a person must look")
        added = 0
        for number, event in enumerate(events[len(have):], start=len(have)):
            place = f"{number:012d}"
            # A place taken already: another copy of the same item got there first. The caller reads the whole
            # chain back and compares it with the source's, so a different event there does not pass unseen.
            if self._put_sealed(self._item_key(evidence_id, CUSTODY, f"{place}.json"), custody.encode(event),
                                _custody_context(evidence_id, place)):
                added += 1
        return added

    def acknowledge_custody_damage(self, evidence_id: str, actor: str, reason: str) -> dict:
        raise CustodyError("acknowledging damaged custody in an S3 store is not supported yet; a person must look "
                           f"at s3://{self.bucket}/{self._item_key(evidence_id, CUSTODY)}/")

    def custody(self, evidence_id: str) -> custody.ChainReport:
        events = self._events(evidence_id)
        report = custody.verify_chain(b"".join(_UNOPENED if data is None else data for _, data in events),
                                      evidence_id)
        for number, (key, data) in enumerate(events):
            if data is None:
                report.problems.append(f"custody object {key} does not decrypt (altered, or moved from another "
                                       "place)")
            elif not key.endswith(f"/{number:012d}.json") or data.count(b"\n") != 1:
                report.problems.append(f"custody object {key} is not event {number} (a gap, or an edited object)")
        if not events:
            report.problems.append("the custody log is missing or empty")
        return report

    def uncommitted_leftovers(self, evidence_id: str) -> list[str]:
        return []   # attempts that never committed are unreferenced by any run.json; see discard_uncommitted

    def location(self, evidence_id: str, run_id: str | None = None) -> str:
        run = ["runs", self._run_folder(evidence_id, run_id)] if run_id else []
        return f"s3://{self.bucket}/{self._item_key(evidence_id, *run)}"

    def exposure(self) -> list[str]:
        problems = [] if self.locked else [f"bucket {self.bucket} has no Object Lock: originals can be deleted"]
        if self.sealing.enabled:   # a prefix that cannot be told is left out of every listing, the audit's too
            problems += [f"s3://{self.bucket}/{self._key(name)}/: an item whose sealed id is missing or does not "
                         "open (planted, damaged, or from another store)"
                         for name, found in self._items().items() if found is None]
        return problems
