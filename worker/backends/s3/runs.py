"""An S3 store's runs: outputs under the attempt that wrote them, run.json written last (once) to commit
the run and name that attempt; read back and re-hashed.

A part of S3Store (its base class), which gives it the objects (BucketObjects) and the item keys.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from worker.encryption.sealing import context
from worker.errors import IntegrityError, NotFound
from worker.record import store as port
from worker.record.fixity import copy_and_hash
from worker.record.store import RunRecord, json_bytes
from worker.record.timestamps import utc_now


class S3Runs:
    """The runs half of S3Store."""

    def _run_folder(self, evidence_id: str, run_id: str) -> str:
        """A run's prefix in its item: the run id, or a keyed hash of it when sealed (it follows from the video's
        hash, so in the clear it would name the video)."""
        return self.sealing.run_name(evidence_id, port.check_run_id(run_id))

    def _in_run(self, evidence_id: str, folder: str, name: str, attempt: str = "") -> tuple[str, bytes]:
        """The key of a run's object (an output under the attempt that wrote it, if any) and what it opens as."""
        key = self._item_key(evidence_id, "runs", folder, *([attempt] if attempt else []), name)
        return key, context(evidence_id, "runs", folder, name)

    def _record(self, evidence_id: str, run_id: str) -> dict[str, Any]:
        return json.loads(self._get_sealed(*self._in_run(evidence_id, self._run_folder(evidence_id, run_id),
                                                         port.RUN_RECORD)))

    def is_committed(self, evidence_id: str, run_id: str) -> bool:
        key, _ = self._in_run(evidence_id, self._run_folder(evidence_id, run_id), port.RUN_RECORD)
        return self._exists(key)

    def _commit_new_run(self, evidence_id: str, run_id: str, files: Mapping[str, Path],
                        record: Mapping[str, Any], exact: bytes | None = None) -> RunRecord | None:
        copied = json.loads(exact) if exact is not None else None
        # A copied run keeps its source's run.json byte for byte, so its outputs go where that names: under the
        # source's attempt (from S3), or none (from a local store).
        attempt = str(copied.get("attempt", "")) if copied is not None else f"attempt-{secrets.token_hex(6)}"
        folder = self._run_folder(evidence_id, run_id)
        outputs = {}
        for name, source in sorted(files.items()):
            key, what = self._in_run(evidence_id, folder, name, attempt)
            with open(source, "rb") as handle, self._sendable(handle, what) as (body, (digest, size), sent):
                # Only a copy finds its key taken: by an earlier copy of the same run, cut off before run.json.
                if not self._put_once(key, body, *sent) and self._stream_hash(key, None, what) != (digest, size):
                    raise IntegrityError(f"s3://{self.bucket}/{key} holds other bytes than {name} of run {run_id}; "
                                         "a person must look")
            outputs[name] = {"sha256": digest, "size": size}
        full = {**record, "outputs": outputs, "committed_at": utc_now(), "attempt": attempt}
        data = json_bytes(full)
        if copied is not None:
            full, data = copied, exact
            if full.get("outputs") != outputs:
                raise IntegrityError(f"the outputs copied for run {run_id} do not hash as its run.json records")
        key, what = self._in_run(evidence_id, folder, port.RUN_RECORD)
        if not self._put_sealed(key, data, what):
            return None   # another attempt committed this run first; keep theirs
        return RunRecord(full, hashlib.sha256(data).hexdigest())

    @contextmanager
    def _sendable(self, source: BinaryIO, what: bytes) -> Iterator[tuple[BinaryIO, tuple[str, int], tuple[str, int]]]:
        """``source`` as it is sent, at its start, with the SHA-256 and size of its plaintext and of what is sent."""
        if not self.sealing.enabled:   # a file is sent as it is, hashed first
            plain = copy_and_hash(source, None)
            source.seek(0)
            yield source, plain, plain
            return
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:   # ciphertext only; unnamed
            plain, sent = self._spool(source, spool, what)
            spool.seek(0)
            yield spool, plain, sent

    def discard_uncommitted(self, evidence_id: str, run_id: str) -> None:
        pass   # nothing can be deleted; a crashed attempt's objects stay beside the committed one, unreferenced

    def run_records(self, evidence_id: str) -> list[RunRecord]:
        records = []
        runs = self._item_key(evidence_id, "runs")
        for key in self._keys(runs + "/"):
            parts = key[len(runs) + 1:].split("/")
            if len(parts) == 2 and parts[1] == port.RUN_RECORD:
                data = self._get_sealed(*self._in_run(evidence_id, parts[0], port.RUN_RECORD))
                records.append(RunRecord(json.loads(data), hashlib.sha256(data).hexdigest()))
        return sorted(records, key=lambda r: str(r.record.get("committed_at", "")))

    def _output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, bytes]:
        """The key of a committed run's output, and what it opens as."""
        if not self.is_committed(evidence_id, run_id):
            raise NotFound(f"run {run_id} of {evidence_id} is not committed")
        if not port.OUTPUT_NAME.match(name):
            raise NotFound(f"{name!r} is not an output name")
        attempt = str(self._record(evidence_id, run_id).get("attempt", ""))
        return self._in_run(evidence_id, self._run_folder(evidence_id, run_id), name, attempt)

    def read_output(self, evidence_id: str, run_id: str, name: str) -> bytes:
        try:
            return self._get_sealed(*self._output(evidence_id, run_id, name))
        except NotFound:
            raise NotFound(f"run {run_id} has no output {name!r}") from None

    def fetch_output(self, evidence_id: str, run_id: str, name: str, dest: Path, *, expected_sha256: str) -> Path:
        key, what = self._output(evidence_id, run_id, name)
        return self._download(key, dest, what, expected_sha256,
                              f"{name} of run {run_id} no longer matches the SHA-256 its run.json records")

    def hash_output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, int]:
        key, what = self._output(evidence_id, run_id, name)
        return self._stream_hash(key, None, what)
