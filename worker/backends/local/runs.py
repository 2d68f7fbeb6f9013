"""A local store's runs: assembled in a hidden staging folder (outputs, then run.json) and renamed into
``runs/<run-id>`` in one step, so a crash never leaves anything that looks committed; read back through
the folder held open, re-hashed where the caller asks.

A part of LocalStore (its base class), which gives it the item folders (``_item``, ``_exists``,
``_folder_name``), the sealing and the root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from worker.encryption.sealing import context
from worker.errors import IntegrityError, NotFound
from worker.fs.directory import Directory, LinkRefused
from worker.fs.space import DiskFull, is_disk_full
from worker.record.fixity import copy_and_hash
from worker.record.store import (
    OUTPUT_NAME,
    RUN_RECORD,
    RunRecord,
    check_run_id,
    json_bytes,
)
from worker.record.timestamps import utc_now

STAGING_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"


class LocalRuns:
    """The runs half of LocalStore."""

    @contextmanager
    def _runs(self, evidence_id: str, *, create: bool = False) -> Iterator[Directory | None]:
        with self._item(evidence_id) as item:
            if not create and not item.is_dir("runs"):
                yield None
                return
            with item.child("runs", create=create) as runs:
                yield runs

    def is_committed(self, evidence_id: str, run_id: str) -> bool:
        folder = self.sealing.run_name(evidence_id, check_run_id(run_id))
        if not self._exists(evidence_id):
            return False
        with self._runs(evidence_id) as runs:
            if runs is None or not runs.is_dir(folder):
                return False
            with runs.child(folder) as run:
                return run.exists(RUN_RECORD)

    def _commit_new_run(self, evidence_id: str, run_id: str, files: Mapping[str, Path],
                        record: Mapping[str, Any], exact: bytes | None = None) -> RunRecord | None:
        name = self.sealing.run_name(evidence_id, run_id)
        with self._runs(evidence_id, create=True) as runs:
            staging = f"{STAGING_PREFIX}{name}-{secrets.token_hex(6)}"
            # Locked before the folder exists: discard_uncommitted never sees this folder unlocked.
            with runs.locked(staging + LOCK_SUFFIX):
                try:
                    with runs.child(staging, create=True) as folder:
                        full, digest = self._fill(folder, files, record, evidence_id, name, exact)
                    try:
                        runs.rename(staging, runs, name)
                    except OSError as exc:
                        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                            return None  # another attempt committed this run first; keep theirs
                        raise
                    runs.fsync()
                    runs.seal(name)
                    return RunRecord(full, digest)
                except OSError as exc:
                    if is_disk_full(exc):
                        raise DiskFull(f"the disk of {self.root} filled up while committing run {run_id};"
                                       " nothing was committed. Work resumes once space is freed") from exc
                    raise
                finally:
                    runs.remove_tree(staging)
                    runs.unlink(staging + LOCK_SUFFIX, missing_ok=True)

    def _fill(self, folder: Directory, files: Mapping[str, Path], record: Mapping[str, Any], evidence_id: str,
              run_name: str, exact: bytes | None) -> tuple[dict, str]:
        outputs = {}
        for name, source in sorted(files.items()):
            source = Path(source)
            with Directory.open(source.parent) as origin, origin.open_file(source.name) as src, \
                    folder.open_file(name, "wb") as dst:
                with self.sealing.writer(dst, context(evidence_id, "runs", run_name, name), media=True) as sink:
                    digest, size = copy_and_hash(src, sink)
                dst.flush()
                os.fsync(dst.fileno())
                os.fchmod(dst.fileno(), 0o400)
            outputs[name] = {"sha256": digest, "size": size}
        full = {**record, "outputs": outputs, "committed_at": utc_now()}
        data = json_bytes(full)
        if exact is not None:
            full, data = json.loads(exact), exact
            if full.get("outputs") != outputs:
                raise IntegrityError(f"the outputs copied for run {full.get('run_id')} do not hash as its run.json "
                                     "records")
        # The last file written: this is the commit record.
        folder.write_once(RUN_RECORD, self.sealing.seal_bytes(data, context(evidence_id, "runs", run_name, RUN_RECORD)))
        folder.fsync()
        return full, hashlib.sha256(data).hexdigest()

    def _staging_folders(self, evidence_id: str, run_id: str = "") -> list[str]:
        with self._runs(evidence_id) as runs:
            if runs is None:
                return []
            prefix = f"{STAGING_PREFIX}{run_id}"
            return [name for name in runs.names() if name.startswith(prefix) and runs.is_dir(name)]

    def discard_uncommitted(self, evidence_id: str, run_id: str) -> None:
        with self._runs(evidence_id) as runs:
            for staging in self._staging_folders(evidence_id, f"{self.sealing.run_name(evidence_id, run_id)}-"):
                try:
                    if runs.held(staging + LOCK_SUFFIX):
                        continue  # a live worker is committing it
                except FileNotFoundError:
                    pass  # its owner got as far as removing its lock
                runs.remove_tree(staging)
                runs.unlink(staging + LOCK_SUFFIX, missing_ok=True)

    def run_records(self, evidence_id: str) -> list[RunRecord]:
        records = []
        with self._runs(evidence_id) as runs:
            for name in [] if runs is None else runs.names():
                if name.startswith(".") or not runs.is_dir(name):
                    continue
                try:
                    with runs.child(name) as run:
                        data = self.sealing.open_bytes(run.read_bytes(RUN_RECORD),
                                                       context(evidence_id, "runs", name, RUN_RECORD))
                except (FileNotFoundError, LinkRefused):
                    continue
                records.append(RunRecord(json.loads(data), hashlib.sha256(data).hexdigest()))
        return sorted(records, key=lambda r: str(r.record.get("committed_at", "")))

    @contextmanager
    def _output(self, evidence_id: str, run_id: str, name: str) -> Iterator[BinaryIO]:
        if not self.is_committed(evidence_id, run_id):
            raise NotFound(f"run {run_id} of {evidence_id} is not committed")
        if not OUTPUT_NAME.match(name):
            raise NotFound(f"{name!r} is not an output name")
        folder = self.sealing.run_name(evidence_id, run_id)
        with self._runs(evidence_id) as runs, runs.child(folder) as run:
            try:
                handle = run.open_file(name)
            except FileNotFoundError:
                raise NotFound(f"run {run_id} has no output {name!r}") from None
        with handle:
            yield self.sealing.reader(handle, context(evidence_id, "runs", folder, name))

    def read_output(self, evidence_id: str, run_id: str, name: str) -> bytes:
        with self._output(evidence_id, run_id, name) as handle:
            return handle.read()

    def fetch_output(self, evidence_id: str, run_id: str, name: str, dest: Path, *, expected_sha256: str) -> Path:
        dest = Path(dest)
        with self._output(evidence_id, run_id, name) as handle, Directory.open(dest.parent) as folder:
            try:
                with folder.open_file(dest.name, "wb") as out:
                    digest, _ = copy_and_hash(handle, out)
                if digest != expected_sha256:
                    raise IntegrityError(f"{name} of run {run_id} no longer matches the SHA-256 its run.json "
                                         "records; it was altered on disk and is not reused")
            except BaseException:
                folder.unlink(dest.name, missing_ok=True)
                raise
        return dest

    def hash_output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, int]:
        with self._output(evidence_id, run_id, name) as handle:
            return copy_and_hash(handle, None)

