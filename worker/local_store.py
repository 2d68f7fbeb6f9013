"""LocalStore: the EvidenceStore on a local filesystem (the embedded default).

Write-once without races: an original is copied to a temporary file on the
same filesystem while it is hashed, fsynced, and then hard-linked into place,
which fails rather than replaces when the name exists. A per-item lock file
orders the installation with the custody events, so two processes storing
the same bytes end with one copy, one "ingested" and one "duplicate upload".

A run is assembled in a hidden staging folder (outputs, then run.json) and
renamed into ``runs/<run-id>`` in one step, so a crash never leaves anything
that looks committed. Uploads and staging folders are locked by their owner
while in progress; what a killed process left is recognised by its free lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from worker import custody
from worker.errors import CustodyError, IntegrityError, NotFound, StoreFull
from worker.fixity import copy_and_hash, fsync_dir, hash_file
from worker.locks import OWNER_GRACE_S, abandoned, exclusive
from worker.progress import SILENT, Progress
from worker.store import EVIDENCE_ID, OUTPUT_NAME, RUN_RECORD, EvidenceStore, Stored, stored_name
from worker.timestamps import utc_now

_READ_ONLY_FILE = 0o444
_READ_ONLY_DIR = 0o555
_STAGING_PREFIX = ".staging-"
_LOCK_SUFFIX = ".lock"
_UPLOAD_PREFIX = "upload-"


def _write_json_once(path: Path, value: Mapping[str, Any]) -> bool:
    """Write ``path`` durably unless it exists; False if it did."""
    data = (json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _READ_ONLY_FILE)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _staging_lock(staging: Path) -> Path:
    return staging.with_name(staging.name + _LOCK_SUFFIX)


class LocalStore(EvidenceStore):
    def __init__(self, root: Path, *, min_free_bytes: int = 0):
        self.root = Path(root)
        self.min_free_bytes = min_free_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._incoming = self.root / ".incoming"
        self._incoming.mkdir(exist_ok=True)

    # -- paths -------------------------------------------------------------

    def _item(self, evidence_id: str) -> Path:
        if not EVIDENCE_ID.match(evidence_id):
            raise NotFound(f"{evidence_id!r} is not an evidence id")
        return self.root / evidence_id

    def _original(self, evidence_id: str) -> Path:
        folder = self._item(evidence_id) / "original"
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        if not files:
            raise NotFound(f"no original stored for {evidence_id}")
        return files[0]

    def _locked(self, evidence_id: str) -> AbstractContextManager:
        """Orders everything that changes one item: installing its original, appending custody."""
        return exclusive(self._item(evidence_id) / ".lock")

    # -- originals ---------------------------------------------------------

    def _check_space(self, size_hint: int | None) -> None:
        if size_hint is None:
            return
        free = shutil.disk_usage(self.root).free
        if free - size_hint < self.min_free_bytes:
            raise StoreFull(
                f"storing {size_hint} bytes would leave {max(free - size_hint, 0)} bytes free in {self.root}; "
                f"at least {self.min_free_bytes} must stay free"
            )

    def put_original(self, source: BinaryIO, *, intake: Mapping[str, Any], actor: str,
                     size_hint: int | None = None, progress: Progress = SILENT) -> Stored:
        self._check_space(size_hint)
        fd, tmp_name = tempfile.mkstemp(dir=self._incoming, prefix=_UPLOAD_PREFIX)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # a live upload; see remove_abandoned_uploads
                digest, size = copy_and_hash(source, handle, progress)
                handle.flush()
                os.fsync(handle.fileno())
            return self._install_original(tmp, digest, size, intake, actor)
        finally:
            tmp.unlink(missing_ok=True)

    def _install_original(self, tmp: Path, digest: str, size: int, intake: Mapping[str, Any], actor: str) -> Stored:
        """Link ``tmp`` (already hashed to ``digest``) in as the original, unless one is there."""
        item = self._item(digest)
        item.mkdir(exist_ok=True)
        folder = item / "original"
        with self._locked(digest):
            if not folder.exists():
                folder.mkdir()
            try:
                existing = self._original(digest)
            except NotFound:
                existing = None
            if existing is None:
                os.chmod(tmp, _READ_ONLY_FILE)
                target = folder / stored_name(str(intake.get("original_name", "")))
                os.link(tmp, target)  # never replaces: FileExistsError if anything is there
                fsync_dir(folder)
                os.chmod(folder, _READ_ONLY_DIR)
                fsync_dir(item)
                fsync_dir(self.root)
            elif existing.stat().st_size != size:
                raise IntegrityError(
                    f"the stored original of {digest} is {existing.stat().st_size} bytes, not {size}: "
                    "it was altered on disk; run 'evidence audit'"
                )
            record = {
                **intake,
                "evidence_id": digest,
                "sha256": digest,
                "size": size,
                "stored_as": f"original/{self._original(digest).name}",
                "ingested_at": utc_now(),
                "ingested_by": actor,
            }
            first_intake = _write_json_once(item / "evidence.json", record)
            if first_intake:
                self._append_locked(digest, custody.INGESTED, actor, {"sha256": digest, "size": size, **intake})
            else:
                self._append_locked(digest, custody.DUPLICATE_UPLOAD, actor, {"size": size, **intake})
        return Stored(digest, size, duplicate=not first_intake, location=str(self._original(digest)))

    def remove_abandoned_uploads(self) -> list[str]:
        removed = []
        for path in self._incoming.glob(f"{_UPLOAD_PREFIX}*"):
            try:
                if time.time() - path.stat().st_mtime < OWNER_GRACE_S or not abandoned(path):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(str(path))
        return removed

    def _verified_copy(self, evidence_id: str, target: BinaryIO | None, progress: Progress) -> None:
        path = self._original(evidence_id)
        with open(path, "rb", buffering=0) as handle:
            digest, _ = copy_and_hash(handle, target, progress)
        if digest != evidence_id:
            raise IntegrityError(
                f"the original of {evidence_id} fails its SHA-256 check (its bytes now hash to {digest}); "
                f"it was altered or damaged at {path}"
            )

    def fetch_original(self, evidence_id: str, dest: Path, progress: Progress = SILENT) -> Path:
        dest = Path(dest)
        try:
            with open(dest, "xb") as handle:
                self._verified_copy(evidence_id, handle, progress)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    def verify_original(self, evidence_id: str, progress: Progress = SILENT) -> None:
        self._verified_copy(evidence_id, None, progress)

    def evidence(self, evidence_id: str) -> dict[str, Any]:
        path = self._item(evidence_id) / "evidence.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"no evidence item {evidence_id}") from None

    def evidence_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if EVIDENCE_ID.match(p.name) and p.is_dir())

    # -- custody -----------------------------------------------------------

    def _custody_path(self, evidence_id: str) -> Path:
        return self._item(evidence_id) / "custody.jsonl"

    def _append_locked(self, evidence_id: str, event: str, actor: str, details: Mapping[str, Any]) -> dict:
        path = self._custody_path(evidence_id)
        existed = path.exists()
        with open(path, "a+b") as handle:
            handle.seek(0)
            try:
                previous, torn = custody.next_link(handle.read())
            except ValueError as exc:
                raise CustodyError(f"custody log of {evidence_id} cannot be extended safely: {exc}") from None
            lines = b""
            if torn is not None:
                # A power cut or full disk cut the last event short. Keep its bytes, end the line, and
                # record the repair in the chain before the new event.
                previous = custody.new_event(previous, event=custody.CUSTODY_REPAIRED, evidence_id=evidence_id,
                                             actor=actor, details=torn)
                lines = b"\n" + custody.encode(previous)
            entry = custody.new_event(previous, event=event, evidence_id=evidence_id, actor=actor, details=details)
            handle.write(lines + custody.encode(entry))
            handle.flush()
            os.fsync(handle.fileno())
        if not existed:
            fsync_dir(path.parent)
        return entry

    def append_custody(self, evidence_id: str, event: str, actor: str, details: Mapping[str, Any]) -> dict:
        if not self._item(evidence_id).is_dir():
            raise NotFound(f"no evidence item {evidence_id}")
        with self._locked(evidence_id):
            return self._append_locked(evidence_id, event, actor, details)

    def custody(self, evidence_id: str) -> custody.ChainReport:
        try:
            data = self._custody_path(evidence_id).read_bytes()
        except FileNotFoundError:
            data = b""
        report = custody.verify_chain(data, evidence_id)
        if not data:
            report.problems.append("the custody log is missing or empty")
        return report

    # -- runs --------------------------------------------------------------

    def _run_dir(self, evidence_id: str, run_id: str) -> Path:
        if not OUTPUT_NAME.match(run_id):
            raise NotFound(f"{run_id!r} is not a run id")
        return self._item(evidence_id) / "runs" / run_id

    def is_committed(self, evidence_id: str, run_id: str) -> bool:
        return (self._run_dir(evidence_id, run_id) / RUN_RECORD).is_file()

    def commit_run(self, evidence_id: str, run_id: str, files: Mapping[str, Path],
                   record: Mapping[str, Any]) -> dict[str, Any] | None:
        final = self._run_dir(evidence_id, run_id)
        if (final / RUN_RECORD).exists():
            return None
        for name in files:
            if not OUTPUT_NAME.match(name) or name == RUN_RECORD:
                raise ValueError(f"{name!r} cannot be an output name")
        final.parent.mkdir(exist_ok=True)
        staging = final.with_name(f"{_STAGING_PREFIX}{run_id}-{uuid.uuid4().hex[:12]}")
        # Locked before the folder exists: discard_uncommitted never sees this folder unlocked.
        with exclusive(_staging_lock(staging)):
            staging.mkdir()
            try:
                return self._fill_and_rename(staging, final, files, record)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
                _staging_lock(staging).unlink(missing_ok=True)

    def _fill_and_rename(self, staging: Path, final: Path, files: Mapping[str, Path],
                         record: Mapping[str, Any]) -> dict[str, Any] | None:
        outputs = {}
        for name, source in sorted(files.items()):
            with open(source, "rb", buffering=0) as src, open(staging / name, "xb") as dst:
                digest, size = copy_and_hash(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
            os.chmod(staging / name, _READ_ONLY_FILE)
            outputs[name] = {"sha256": digest, "size": size}
        full = {**record, "outputs": outputs, "committed_at": utc_now()}
        _write_json_once(staging / RUN_RECORD, full)  # last file written: this is the commit record
        fsync_dir(staging)
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return None  # another attempt committed this run first; keep theirs
            raise
        fsync_dir(final.parent)
        os.chmod(final, _READ_ONLY_DIR)
        return full

    def _staging_folders(self, evidence_id: str, run_id: str = "") -> list[Path]:
        runs = self._item(evidence_id) / "runs"
        if not runs.is_dir():
            return []
        return sorted(p for p in runs.glob(f"{_STAGING_PREFIX}{run_id}*") if p.is_dir())

    def discard_uncommitted(self, evidence_id: str, run_id: str) -> None:
        for staging in self._staging_folders(evidence_id, f"{run_id}-"):
            try:
                if not abandoned(_staging_lock(staging)):
                    continue  # a live worker is committing it
            except FileNotFoundError:
                pass  # its owner got as far as removing its lock
            shutil.rmtree(staging, ignore_errors=True)
            _staging_lock(staging).unlink(missing_ok=True)

    def run_records(self, evidence_id: str) -> list[dict[str, Any]]:
        runs = self._item(evidence_id) / "runs"
        records = []
        if runs.is_dir():
            for folder in runs.iterdir():
                path = folder / RUN_RECORD
                if not folder.name.startswith(".") and path.is_file():
                    records.append(json.loads(path.read_text(encoding="utf-8")))
        return sorted(records, key=lambda r: r.get("committed_at", ""))

    def _output(self, evidence_id: str, run_id: str, name: str) -> Path:
        if not self.is_committed(evidence_id, run_id):
            raise NotFound(f"run {run_id} of {evidence_id} is not committed")
        if not OUTPUT_NAME.match(name):
            raise NotFound(f"{name!r} is not an output name")
        return self._run_dir(evidence_id, run_id) / name

    def read_output(self, evidence_id: str, run_id: str, name: str) -> bytes:
        try:
            return self._output(evidence_id, run_id, name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"run {run_id} has no output {name!r}") from None

    def hash_output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, int]:
        try:
            return hash_file(self._output(evidence_id, run_id, name))
        except FileNotFoundError:
            raise NotFound(f"run {run_id} has no output {name!r}") from None

    def uncommitted_leftovers(self, evidence_id: str) -> list[str]:
        return [str(p) for p in self._staging_folders(evidence_id)]

    def location(self, evidence_id: str, run_id: str | None = None) -> str:
        return str(self._run_dir(evidence_id, run_id) if run_id else self._item(evidence_id))
