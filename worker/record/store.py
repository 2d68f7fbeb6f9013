"""The EvidenceStore port: what the runner, CLI and audit need from any store.

Layout, the same keys in every store:

    <evidence-id>/original/<stored name>     write-once, read-only
    <evidence-id>/evidence.json              intake facts, write-once
    <evidence-id>/custody.jsonl              hash-chained custody events
    <evidence-id>/runs/<run-id>/...          derivatives; run.json commits the run

``evidence-id`` is the lowercase hex SHA-256 of the original's bytes. File
names given by uploaders are kept in evidence.json, never used as keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from worker.errors import IntegrityError, NotFound
from worker.progress import SILENT, Progress
from worker.record.custody import ChainReport

EVIDENCE_ID = re.compile(r"^[0-9a-f]{64}$")
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RUN_RECORD = "run.json"


@dataclass(frozen=True)
class RunRecord:
    record: dict[str, Any]   # run.json as stored
    sha256: str              # of run.json's bytes, which the "run committed" custody event records


@dataclass(frozen=True)
class Stored:
    evidence_id: str
    size: int
    duplicate: bool   # the same bytes were already stored
    location: str     # where a person finds the original


def json_bytes(value: Mapping[str, Any]) -> bytes:
    """A record as every store writes it (evidence.json, run.json): the bytes custody events hash."""
    return (json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can name a run (a plain name, never hidden); NotFound otherwise."""
    if not OUTPUT_NAME.match(run_id) or run_id.startswith("."):
        raise NotFound(f"{run_id!r} is not a run id")
    return run_id


def check_output_names(names) -> None:
    """Every name a plain file name, and none the run record's; ValueError otherwise."""
    for name in names:
        if not OUTPUT_NAME.match(name) or name == RUN_RECORD:
            raise ValueError(f"{name!r} cannot be an output name")


def stored_name(original_name: str) -> str:
    """``original.<ext>`` with the uploader's extension when it is plain, else ``original.bin``."""
    suffix = original_name.rsplit(".", 1)[-1].lower() if "." in original_name else ""
    return f"original.{suffix}" if re.fullmatch(r"[a-z0-9]{1,8}", suffix) else "original.bin"


class EvidenceStore(ABC):
    @abstractmethod
    def put_original(
        self, source: BinaryIO, *, intake: Mapping[str, Any], actor: str,
        size_hint: int | None = None, progress: Progress = SILENT,
    ) -> Stored:
        """Store ``source`` write-once under its SHA-256; log "ingested" or "duplicate upload"."""

    @abstractmethod
    def remove_abandoned_uploads(self) -> list[str]:
        """Delete partial uploads whose process died mid-copy (unredacted bytes must not linger)."""

    @abstractmethod
    def partial_uploads(self) -> list[str]:
        """Partial uploads whose process died mid-copy, still there (for the audit to mention)."""

    @abstractmethod
    def recover(self, actor: str) -> list[str]:
        """Finish or roll back what processes that died left half-done (intakes, custody writes); say what."""

    @abstractmethod
    def fetch_original(self, evidence_id: str, dest: Path, progress: Progress = SILENT) -> Path:
        """Copy the original to ``dest``, re-verifying its SHA-256 (IntegrityError on mismatch)."""

    @abstractmethod
    def original_for_run(self, evidence_id: str, work: Path, progress: Progress = SILENT) -> Path:
        """A local file of the original, re-verified now, that a run's steps read (and never write).

        A store on local disk hands over the stored, read-only file itself,
        with no second copy; a remote store downloads into ``work``.
        """

    @abstractmethod
    def verify_original(self, evidence_id: str, progress: Progress = SILENT) -> None:
        """Re-hash the stored original; IntegrityError on mismatch."""

    @abstractmethod
    def evidence(self, evidence_id: str) -> dict[str, Any]:
        """The intake facts (evidence.json); NotFound if there is no such item."""

    @abstractmethod
    def evidence_ids(self) -> list[str]:
        """Every item in the store, including ones whose intake was interrupted."""

    @abstractmethod
    def append_custody(self, evidence_id: str, event: str, actor: str, details: Mapping[str, Any],
                       *, recover: bool = True) -> dict:
        """Append one event to the item's chain, durably; return it.

        Writers may first close a custody write of theirs that died half-way
        (``recover``); readers (audit, show) pass False and get CustodyError
        instead, so reading never changes what is read.
        """

    @abstractmethod
    def acknowledge_custody_damage(self, evidence_id: str, actor: str, reason: str) -> dict:
        """A person's logged acknowledgement of damage no interrupted write explains; appends resume."""

    @abstractmethod
    def custody(self, evidence_id: str) -> ChainReport:
        """The item's events and the result of checking their chain."""

    @abstractmethod
    def add_custody_stamp(self, evidence_id: str, stamp: Mapping[str, Any]) -> bool:
        """Keep a time-stamp of the chain's head beside the chain, once per event (False: one is there)."""

    @abstractmethod
    def custody_stamps(self, evidence_id: str) -> list[dict[str, Any]]:
        """The stamps kept beside the chain, in event order; one that does not open or parse comes as
        {"name", "damaged"} (worker.record.stamps.kept)."""

    @abstractmethod
    def keep_signing_file(self, name: str, data: bytes) -> bool:
        """Keep one file of the signing set (worker.processing.signing.keepsakes) in the store's ``signing/``
        area: write-once, sealed when the store is (a trial CA's key among them). False: it is there."""

    @abstractmethod
    def signing_files(self) -> dict[str, bytes]:
        """The files keep_signing_file kept, by name, opened; one that does not open is left out."""

    @abstractmethod
    def is_committed(self, evidence_id: str, run_id: str) -> bool: ...

    def commit_run(
        self, evidence_id: str, run_id: str, files: Mapping[str, Path], record: Mapping[str, Any]
    ) -> RunRecord | None:
        """Store ``files`` and then run.json (``record`` plus output hashes) as a new run.

        Returns the record written, or None when the run was already committed
        (nothing is overwritten).
        """
        check_run_id(run_id)
        check_output_names(files)
        if self.is_committed(evidence_id, run_id):
            return None
        return self._commit_new_run(evidence_id, run_id, files, record)

    @abstractmethod
    def _commit_new_run(
        self, evidence_id: str, run_id: str, files: Mapping[str, Path], record: Mapping[str, Any],
        exact: bytes | None = None,
    ) -> RunRecord | None:
        """commit_run once the names are checked; None when another attempt commits it first.

        ``exact``: run.json's bytes as another store holds them (replication);
        the outputs stored must hash as they record (IntegrityError otherwise).
        """

    # -- replication: an item copied between stores as it is ------------------------

    @abstractmethod
    def has_original(self, evidence_id: str) -> bool: ...

    @abstractmethod
    def open_original(self, evidence_id: str) -> AbstractContextManager[BinaryIO]:
        """The original's plaintext as a stream, not yet verified: whoever reads it hashes it."""

    @abstractmethod
    def adopt_original(self, evidence_id: str, source: BinaryIO, record: Mapping[str, Any],
                       progress: Progress = SILENT) -> bool:
        """Store another store's original and its intake record as they are, with no custody event of its own.

        IntegrityError, and nothing stored, unless ``source`` hashes to
        ``evidence_id``. False when the original was already here.
        """

    @abstractmethod
    def adopt_custody(self, evidence_id: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Append, verbatim, those of ``events`` (another store's whole chain) this store lacks; how many.

        CustodyError unless this store's chain is the start of ``events``.
        """

    def adopt_run(self, evidence_id: str, run_id: str, files: Mapping[str, Path], run: RunRecord) -> bool:
        """Commit another store's run with its run.json byte for byte; False when it was here already."""
        check_run_id(run_id)
        check_output_names(files)
        data = json_bytes(run.record)
        if hashlib.sha256(data).hexdigest() != run.sha256:
            raise IntegrityError(f"run {run_id} of {evidence_id}: its record does not hash as the source says")
        if self.is_committed(evidence_id, run_id):
            if not any(mine.sha256 == run.sha256 for mine in self.run_records(evidence_id)):
                raise IntegrityError(f"run {run_id} of {evidence_id} is committed here with another run.json")
            return False
        self.discard_uncommitted(evidence_id, run_id)
        return self._commit_new_run(evidence_id, run_id, files, run.record, exact=data) is not None

    @abstractmethod
    def discard_uncommitted(self, evidence_id: str, run_id: str) -> None:
        """Remove what an earlier, crashed attempt of this run left behind (never a committed run)."""

    @abstractmethod
    def run_records(self, evidence_id: str) -> list[RunRecord]:
        """run.json of every committed run, oldest first (as stored: verify before trusting)."""

    @abstractmethod
    def read_output(self, evidence_id: str, run_id: str, name: str) -> bytes:
        """A (small) output of a committed run."""

    @abstractmethod
    def fetch_output(self, evidence_id: str, run_id: str, name: str, dest: Path, *, expected_sha256: str) -> Path:
        """Copy an output of a committed run to ``dest``, streamed; IntegrityError unless it hashes as expected."""

    @abstractmethod
    def hash_output(self, evidence_id: str, run_id: str, name: str) -> tuple[str, int]:
        """(SHA-256, size) of an output of a committed run, as stored now."""

    @abstractmethod
    def uncommitted_leftovers(self, evidence_id: str) -> list[str]:
        """Traces of runs that never committed (crashed attempts), for the audit to report."""

    @abstractmethod
    def location(self, evidence_id: str, run_id: str | None = None) -> str:
        """Where a person finds the item (or one of its runs)."""

    @abstractmethod
    def exposure(self) -> list[str]:
        """What another account could read or redirect: loose permissions, links this software did not make."""

    def resolve(self, prefix: str) -> str:
        """The full evidence id that ``prefix`` (at least 6 hex digits) names."""
        prefix = prefix.strip().lower()
        if EVIDENCE_ID.match(prefix):
            self.evidence(prefix)
            return prefix
        if not re.fullmatch(r"[0-9a-f]{6,63}", prefix):
            raise NotFound(f"{prefix!r} is not an evidence id (64 hex digits, or a unique prefix of 6 or more)")
        matches = [item for item in self.evidence_ids() if item.startswith(prefix)]
        if len(matches) != 1:
            raise NotFound(f"{len(matches) or 'no'} evidence items start with {prefix!r}")
        return matches[0]
