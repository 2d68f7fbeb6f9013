"""LocalStore: the EvidenceStore on a local filesystem (the embedded default).

Every folder is held open and every name resolved relative to it without
following links (worker.fs.directory); everything is owner-only.

Write-once without races: an original is copied to a temporary file on the
same filesystem while it is hashed, fsynced, and then hard-linked into place,
which fails rather than replaces when the name exists. A per-item lock file
orders the installation with the custody events, so two processes storing
the same bytes end with one copy, one "ingested" and one "duplicate upload".

An intake is one unit (worker.backends.local.intake): a failure rolls back what it
wrote, and what a killed process left is completed or rolled back by
``recover``.

A run is assembled in a hidden staging folder (outputs, then run.json) and
renamed into ``runs/<run-id>`` in one step, so a crash never leaves anything
that looks committed (worker.backends.local.runs). Uploads and staging folders are locked by their owner
while in progress; what a killed process left is recognised by its free lock.

With a master key (worker.encryption.sealing) every file is sealed as it is
written, an item's folder is named by a keyed hash of its evidence id, and
a sealed ``item.id`` inside says which item it is; originals are hashed as
plaintext on the way in and re-hashed after decryption on every read.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from worker.backends.layout import ITEM_ID, ORIGINAL, ORIGINAL_CONTEXT, RECORD, SEALED_ORIGINAL, record_context
from worker.backends.local.custody_file import CustodyFile
from worker.backends.local.intake import complete_intake, original_name, read_record, store_intake
from worker.backends.local.runs import LocalRuns
from worker.backends.local.signing_set import LocalSigningSet
from worker.backends.local.stamps import LocalStamps
from worker.encryption.envelope import MasterKey
from worker.encryption.sealing import KEYRING, Sealing, context, open_keyring
from worker.errors import ConfigError, EvidenceError, IntegrityError, NotFound
from worker.fs.directory import OWNER_GRACE_S, Directory, LinkRefused
from worker.fs.permissions import exposed
from worker.fs.space import DiskFull, ensure_free, is_disk_full
from worker.progress import SILENT, Progress
from worker.record import custody
from worker.record.fixity import copy_and_hash
from worker.record.store import (
    EVIDENCE_ID,
    EvidenceStore,
    Stored,
    check_run_id,
    json_bytes,
    stored_name,
)

log = logging.getLogger("evidence.store")

_UPLOAD_PREFIX = "upload-"
_INCOMING = ".incoming"
_IN_USE = ".in-use"


class LocalStore(LocalRuns, LocalStamps, LocalSigningSet, EvidenceStore):
    def __init__(self, root: Path, *, min_free_bytes: int = 0, key: MasterKey | None = None,
                 exclusive: bool = False):
        """``exclusive``: for re-keying, which no other process may overlap (workers hold the store shared)."""
        self.root = Path(os.path.abspath(root))
        self.min_free_bytes = min_free_bytes
        self._root = Directory.open(self.root, create=True)
        self._in_use = -1
        try:
            self._in_use = self._root.open_fd(_IN_USE, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(self._in_use, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"the store {self.root} is in use by another process (a worker?): stop it first"
                                  if exclusive else f"the store {self.root} is being re-keyed ('evidence keys "
                                  "rotate-storage-key'): wait until it is done") from None
            self._root.child(_INCOMING, create=True).close()
            self.sealing: Sealing = open_keyring(
                key, read=lambda: self._root.read_bytes(KEYRING) if self._root.exists(KEYRING) else None,
                write_once=lambda data: self._root.write_once(KEYRING, data),
                holds_items=lambda: bool(self._item_names()), where=f"the store {self.root}",
                holds_sealed_items=self._holds_sealed_items)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._in_use >= 0:
            os.close(self._in_use)
            self._in_use = -1
        self._root.close()

    def _incoming(self) -> Directory:
        """Where uploads are copied before they are linked in (opened afresh: it may have been replaced)."""
        return self._root.child(_INCOMING, create=True)

    # -- folders -----------------------------------------------------------

    def _check_id(self, evidence_id: str) -> str:
        if not EVIDENCE_ID.match(evidence_id):
            raise NotFound(f"{evidence_id!r} is not an evidence id")
        return evidence_id

    def _folder_name(self, evidence_id: str) -> str:
        return self.sealing.item_name(self._check_id(evidence_id))

    @contextmanager
    def _item(self, evidence_id: str, *, create: bool = False) -> Iterator[Directory]:
        name = self._folder_name(evidence_id)
        try:
            folder = self._root.child(name, create=create)
        except FileNotFoundError:
            raise NotFound(f"no evidence item {evidence_id}") from None
        with folder:
            if create and self.sealing.enabled and not folder.exists(ITEM_ID):
                sealed_id = self.sealing.seal_bytes(evidence_id.encode("ascii"), context(ITEM_ID, name))
                folder.write_once(ITEM_ID, sealed_id)
            yield folder

    def _holds_sealed_items(self) -> bool:
        for name in self._item_names():
            with self._root.child(name) as folder:
                if folder.exists(ITEM_ID):
                    return True
        return False

    def _identify(self, name: str) -> str | None:
        """The evidence id a sealed item folder holds (None if it cannot be told: then it is reported)."""
        try:
            with self._root.child(name) as folder:
                evidence_id = self.sealing.open_bytes(folder.read_bytes(ITEM_ID), context(ITEM_ID, name)).decode()
        except (OSError, EvidenceError, UnicodeDecodeError, LinkRefused):
            return None
        return evidence_id if EVIDENCE_ID.match(evidence_id) and self.sealing.item_name(evidence_id) == name else None

    def _items(self) -> dict[str, str | None]:
        """Each item folder's name and the evidence id it holds (None: a sealed folder that cannot be told)."""
        if not self.sealing.enabled:
            return {name: name for name in self._item_names()}
        return {name: self._identify(name) for name in self._item_names()}

    @contextmanager
    def _locked(self, evidence_id: str, *, create: bool = False) -> Iterator[Directory]:
        """Orders everything that changes one item: its intake, custody appends, recovery."""
        with self._item(evidence_id, create=create) as item, item.locked(".lock"):
            yield item

    # -- originals ---------------------------------------------------------

    def put_original(self, source: BinaryIO, *, intake: Mapping[str, Any], actor: str,
                     size_hint: int | None = None, progress: Progress = SILENT) -> Stored:
        if size_hint is not None:
            ensure_free(self.root, size_hint, self.min_free_bytes, "store the original")
        with self._received(source, progress) as (incoming, tmp, digest, size):
            return self._install_original(incoming, tmp, digest, size, intake, actor)

    @contextmanager
    def _received(self, source: BinaryIO, progress: Progress) -> Iterator[tuple[Directory, str, str, int]]:
        """``source`` copied (sealed when encryption is on) into a private, read-only upload file, hashed.

        Yields (the uploads folder, the file's name, SHA-256, size); the file
        is removed afterwards, whether or not it was linked in.
        """
        with self._incoming() as incoming:
            fd, tmp = incoming.new_temp(_UPLOAD_PREFIX)
            try:
                with os.fdopen(fd, "wb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)  # a live upload; see remove_abandoned_uploads
                    with self.sealing.writer(handle, ORIGINAL_CONTEXT, media=True) as sink:
                        digest, size = copy_and_hash(source, sink, progress)
                    handle.flush()
                    os.fsync(handle.fileno())
                    os.fchmod(handle.fileno(), 0o400)
                yield incoming, tmp, digest, size
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(f"the disk of {self.root} filled up while storing the original; nothing was"
                                   " stored. Work resumes once space is freed") from exc
                raise
            finally:
                incoming.unlink(tmp, missing_ok=True)

    def _install_original(self, incoming: Directory, tmp: str, digest: str, size: int, intake: Mapping[str, Any],
                          actor: str) -> Stored:
        """Link ``tmp`` (already hashed to ``digest``) in as the original, unless one is there."""
        with self._locked(digest, create=True) as item:
            complete_intake(item, digest, actor, self.sealing)
            existing = original_name(item)
            if existing is None:
                log_file = CustodyFile(item, digest, self.sealing)
                ingested = any(e.get("event") == custody.INGESTED
                               for e in custody.verify_chain(log_file.read(), digest).events)
                if item.exists(RECORD) or ingested:  # stored before, and its original is gone: damage, not a gap
                    raise IntegrityError(
                        f"evidence {digest} was stored before, but its original is gone (deleted or lost on disk);"
                        " nothing is changed: run 'evidence audit', and have a person look before storing it again"
                    )
                # Sealed, even the uploader's extension stays in the (sealed) record only.
                name = SEALED_ORIGINAL if self.sealing.enabled else stored_name(str(intake.get("original_name", "")))
                store_intake(item, incoming, tmp, name, digest, size, intake, actor, self.sealing)
                duplicate = False
            else:
                with item.child(ORIGINAL) as folder:
                    stored_size = folder.lstat(existing).st_size
                if stored_size != self.sealing.stored_size(size, media=True):
                    raise IntegrityError(
                        f"the stored original of {digest} takes {stored_size} bytes on disk, not what {size} bytes "
                        "take: it was altered on disk; run 'evidence audit'"
                    )
                CustodyFile(item, digest, self.sealing).append(custody.DUPLICATE_UPLOAD, actor,
                                                               {"size": size, **intake}, recover=True)
                name, duplicate = existing, True
        return Stored(digest, size, duplicate=duplicate,
                      location=str(self.root / self._folder_name(digest) / ORIGINAL / name))

    def recover(self, actor: str) -> list[str]:
        done = []
        for evidence_id in filter(None, self._items().values()):
            try:
                with self._locked(evidence_id) as item:
                    what = complete_intake(item, evidence_id, actor, self.sealing)
            except (EvidenceError, OSError) as exc:
                what = f"could not be recovered: {exc}"
                log.error("item could not be recovered", extra={"evidence_id": evidence_id, "reason": str(exc)})
            if what:
                done.append(f"{evidence_id}: {what}")
        return done

    @staticmethod
    def _abandoned_uploads(incoming: Directory) -> list[str]:
        found = []
        for name in incoming.names():
            if not name.startswith(_UPLOAD_PREFIX):
                continue
            try:
                if time.time() - incoming.lstat(name).st_mtime >= OWNER_GRACE_S and not incoming.held(name):
                    found.append(name)
            except FileNotFoundError:
                continue
        return found

    def partial_uploads(self) -> list[str]:
        with self._incoming() as incoming:
            return [str(self.root / _INCOMING / name) for name in self._abandoned_uploads(incoming)]

    def remove_abandoned_uploads(self) -> list[str]:
        removed = []
        with self._incoming() as incoming:
            for name in self._abandoned_uploads(incoming):
                incoming.unlink(name, missing_ok=True)
                removed.append(str(self.root / _INCOMING / name))
        return removed

    def _open_original(self, evidence_id: str) -> BinaryIO:
        with self._item(evidence_id) as item:
            name = original_name(item)
            if name is None:
                raise NotFound(f"no original stored for {evidence_id}")
            with item.child(ORIGINAL) as folder:
                return folder.open_file(name)

    def _verified_copy(self, evidence_id: str, target: BinaryIO | None, progress: Progress) -> None:
        where = self.root / self._folder_name(evidence_id) / ORIGINAL
        with self._open_original(evidence_id) as handle:
            try:
                digest, _ = copy_and_hash(self.sealing.reader(handle, ORIGINAL_CONTEXT), target, progress)
            except IntegrityError as exc:
                raise IntegrityError(f"the original of {evidence_id} does not decrypt ({exc}); it was altered or "
                                     f"damaged in {where}") from None
        if digest != evidence_id:
            raise IntegrityError(
                f"the original of {evidence_id} fails its SHA-256 check (its bytes now hash to {digest}); "
                f"it was altered or damaged in {where}"
            )

    def fetch_original(self, evidence_id: str, dest: Path, progress: Progress = SILENT) -> Path:
        dest = Path(dest)
        size = self.evidence(evidence_id).get("size") or 0
        ensure_free(dest.parent, int(size), self.min_free_bytes, "make the work copy of the original")
        with Directory.open(dest.parent) as folder:
            try:
                with folder.open_file(dest.name, "wb") as handle:
                    self._verified_copy(evidence_id, handle, progress)
            except BaseException as exc:
                folder.unlink(dest.name, missing_ok=True)
                if is_disk_full(exc) and not isinstance(exc, DiskFull):
                    raise DiskFull(f"the disk of {dest.parent} filled up while copying the original for a run; work "
                                   "resumes once space is freed") from exc
                raise
        return dest

    def verify_original(self, evidence_id: str, progress: Progress = SILENT) -> None:
        self._verified_copy(evidence_id, None, progress)

    def original_for_run(self, evidence_id: str, work: Path, progress: Progress = SILENT) -> Path:
        if self.sealing.enabled:   # decrypted into the run's private work folder (tmpfs recommended)
            name = stored_name(str(self.evidence(evidence_id).get("original_name", "")))
            return self.fetch_original(evidence_id, Path(work) / name, progress)
        # The stored file is read-only in a read-only folder, so what was just hashed is what the steps
        # read; a copy would double the disk a run needs and cost seconds on every job.
        with self._item(evidence_id) as item:
            name = original_name(item)
        if name is None:
            raise NotFound(f"no original stored for {evidence_id}")
        self._verified_copy(evidence_id, None, progress)
        return self.root / evidence_id / ORIGINAL / name

    def _exists(self, evidence_id: str) -> bool:
        return self._root.is_dir(self._folder_name(evidence_id))

    def has_original(self, evidence_id: str) -> bool:
        if not self._exists(evidence_id):
            return False
        with self._item(evidence_id) as item:
            return original_name(item) is not None

    @contextmanager
    def open_original(self, evidence_id: str) -> Iterator[BinaryIO]:
        with self._open_original(evidence_id) as handle:
            yield self.sealing.reader(handle, ORIGINAL_CONTEXT)

    def adopt_original(self, evidence_id: str, source: BinaryIO, record: Mapping[str, Any],
                       progress: Progress = SILENT) -> bool:
        if self.has_original(evidence_id):
            return False
        with self._received(source, progress) as (incoming, tmp, digest, _size):
            if digest != evidence_id:
                raise IntegrityError(f"the copy of {evidence_id} hashes to {digest}: the source gave other bytes; "
                                     "nothing was stored")
            with self._locked(evidence_id, create=True) as item:
                data = json_bytes(record)
                if not item.write_once(RECORD, self.sealing.seal_bytes(data, record_context(evidence_id))) \
                        and json_bytes(read_record(item, evidence_id, self.sealing)) != data:
                    raise IntegrityError(f"{evidence_id} has another intake record here than in the source")
                if original_name(item) is not None:
                    return False
                name = SEALED_ORIGINAL if self.sealing.enabled else stored_name(str(record.get("original_name", "")))
                with item.child(ORIGINAL, create=True) as folder:
                    incoming.link(tmp, folder, name)
                    folder.fsync()
                    os.fchmod(folder.fd, 0o500)
                item.fsync()
        return True

    def evidence(self, evidence_id: str) -> dict[str, Any]:
        with self._item(evidence_id) as item:
            try:
                return read_record(item, evidence_id, self.sealing)
            except FileNotFoundError:
                raise NotFound(f"no evidence item {evidence_id} (its intake is incomplete)") from None

    def _item_names(self) -> list[str]:
        return [name for name in self._root.names() if EVIDENCE_ID.match(name) and self._root.is_dir(name)]

    def evidence_ids(self) -> list[str]:
        """Items with anything stored or logged; a folder an intake rolled back (a lock, an empty log) is none."""
        found = []
        for evidence_id in filter(None, self._items().values()):
            try:
                with self._item(evidence_id) as item:
                    if item.exists(RECORD) or item.exists(ORIGINAL) or CustodyFile(item, evidence_id).read():
                        found.append(evidence_id)
            except (NotFound, LinkRefused):
                continue
        return sorted(found)

    # -- custody -----------------------------------------------------------

    def append_custody(self, evidence_id: str, event: str, actor: str, details: Mapping[str, Any],
                       *, recover: bool = True) -> dict:
        with self._locked(evidence_id) as item:
            return CustodyFile(item, evidence_id, self.sealing).append(event, actor, details, recover=recover)

    def adopt_custody(self, evidence_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        with self._locked(evidence_id, create=True) as item:
            return CustodyFile(item, evidence_id, self.sealing).adopt(events)

    def acknowledge_custody_damage(self, evidence_id: str, actor: str, reason: str) -> dict:
        with self._locked(evidence_id) as item:
            return CustodyFile(item, evidence_id, self.sealing).acknowledge(actor, reason)

    def custody(self, evidence_id: str) -> custody.ChainReport:
        with self._item(evidence_id) as item:
            log_file = CustodyFile(item, evidence_id, self.sealing)
            data, interrupted = log_file.read(), log_file.interrupted()
        report = custody.verify_chain(data, evidence_id)
        if not data:
            report.problems.append("the custody log is missing or empty")
        if interrupted is not None:
            report.problems.append("a custody write was interrupted (its process died); the next worker start "
                                   "or write to this item repairs it")
        return report

    def uncommitted_leftovers(self, evidence_id: str) -> list[str]:
        return [str(self.root / self._folder_name(evidence_id) / "runs" / name)
                for name in self._staging_folders(evidence_id)]

    def location(self, evidence_id: str, run_id: str | None = None) -> str:
        item = self.root / self._folder_name(evidence_id)
        return str(item / "runs" / self.sealing.run_name(evidence_id, check_run_id(run_id)) if run_id else item)

    def exposure(self) -> list[str]:
        unknown = [f"{self.root / name}: an item folder whose sealed id is missing or does not open (planted, "
                   "damaged, or from another store)" for name, found in self._items().items() if found is None]
        return exposed(self.root) + unknown
