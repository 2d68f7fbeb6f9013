"""Off-site replicas: each item copied as it is to every [[replicas]] store, and verified there.

A pass over one item copies what the replica lacks: the original with its
intake record, every committed run, and the custody events after the
replica's last one. Each piece is verified as read back from the replica
(the original re-hashed after decryption, each output re-hashed, the chain
compared event by event), and only then does the primary's chain say
"replicated" (an event then copied too, so the replica is level).

Every piece is written whole or not at all (write-once names, staging
folders, custody appends checked against the source's chain), so a pass
killed anywhere, or a replica that drops off mid-copy, is resumed by the
next pass with nothing copied twice. A replica that hands back other bytes
than were sent is an IntegrityError: nothing unverified counts as a copy.

Restoring is the same copy, from a replica into an empty primary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.encryption.envelope import DecryptionError
from worker.errors import CustodyError, EvidenceError, IntegrityError, JobError, NotFound
from worker.fs.workdirs import private_workdir
from worker.jobs.queue import Job, JobKind, JobQueue
from worker.progress import SILENT, Progress
from worker.record import custody
from worker.record.store import EVIDENCE_ID, EvidenceStore

log = logging.getLogger("evidence.replication")

REPLICATE = JobKind.REPLICATE.value   # what a replication job names as its pipeline


class ReplicaUnavailable(EvidenceError):
    """The replica could not be reached or refused a request; the job is retried later."""

    retryable = True


@dataclass
class Lag:
    """What a replica lacks of one item."""

    evidence_id: str
    original: bool = False
    runs: list[str] = field(default_factory=list)
    custody_events: int = 0
    stamps: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def behind(self) -> bool:
        return self.original or bool(self.runs) or self.custody_events > 0 or self.stamps > 0

    def as_json(self) -> dict[str, Any]:
        return {"evidence_id": self.evidence_id, "original": self.original, "runs": self.runs,
                "custody_events": self.custody_events, "stamps": self.stamps, "problems": self.problems}


@dataclass
class Copied:
    original: bool = False
    runs: list[str] = field(default_factory=list)
    events: list[Mapping[str, Any]] = field(default_factory=list)
    stamps: int = 0
    logged: bool = False   # a "replicated" event was added to the primary's chain


def _run_id(run) -> str:
    return str(run.record.get("run_id", ""))


def lag(source: EvidenceStore, target: EvidenceStore, evidence_id: str) -> Lag:
    found = Lag(evidence_id)
    found.original = source.has_original(evidence_id) and not target.has_original(evidence_id)
    found.runs = [_run_id(run) for run in source.run_records(evidence_id)
                  if not target.is_committed(evidence_id, _run_id(run))]
    mine = source.custody(evidence_id).events
    try:
        theirs = target.custody(evidence_id).events
    except NotFound:
        theirs = []
    if [e.get("hash") for e in theirs] != [e.get("hash") for e in mine[:len(theirs)]]:
        found.problems.append("the replica's custody log is not the start of the primary's (diverged)")
    found.custody_events = max(0, len(mine) - len(theirs))
    found.stamps = len(_stamps_lacking(source, target, evidence_id))
    return found


def _stamps_lacking(source: EvidenceStore, target: EvidenceStore, evidence_id: str) -> list[dict[str, Any]]:
    """The source's time-stamped heads of the item that the target does not keep (a damaged one stays)."""
    try:
        theirs = {int(s["seq"]) for s in target.custody_stamps(evidence_id) if "damaged" not in s}
    except NotFound:
        theirs = set()
    return [s for s in source.custody_stamps(evidence_id) if "damaged" not in s and int(s["seq"]) not in theirs]


def _copy_stamps(source: EvidenceStore, target: EvidenceStore, evidence_id: str) -> int:
    """The stamps the target lacks, written and read back; how many."""
    lacking = _stamps_lacking(source, target, evidence_id)
    for stamp in lacking:
        target.add_custody_stamp(evidence_id, stamp)
    kept = {int(s["seq"]): s for s in target.custody_stamps(evidence_id) if "damaged" not in s}
    if any(kept.get(int(s["seq"])) != s for s in lacking):
        raise IntegrityError(f"a time-stamp of the custody log of {evidence_id} reads back from the replica "
                             "differently")
    return len(lacking)


def copy_item(source: EvidenceStore, target: EvidenceStore, evidence_id: str, work: Path,
              progress: Progress = SILENT) -> Copied:
    """Copy to ``target`` what it lacks of one item, verifying each piece as ``target`` returns it.

    The custody chain goes first: an item whose copy stops half-way is then
    never mistaken for an intake that stopped before it was logged (which a
    worker start would complete with an event of its own). A chain with
    problems is not copied, but the original and the runs still are, and
    the CustodyError comes at the end.
    """
    copied = Copied()
    chain = source.custody(evidence_id)
    if chain.ok:
        copied.events = list(_copy_custody(chain, target, evidence_id))
        copied.stamps = _copy_stamps(source, target, evidence_id)
    if source.has_original(evidence_id) and not target.has_original(evidence_id):
        record = source.evidence(evidence_id)
        try:
            with source.open_original(evidence_id) as stream:
                target.adopt_original(evidence_id, stream, record, progress)
        except DecryptionError as exc:
            raise IntegrityError(f"the original of {evidence_id} does not decrypt where it is copied from "
                                 f"({exc}); nothing was stored") from None
        target.verify_original(evidence_id)   # as the replica gives it back, decrypted and re-hashed
        copied.original = True
    for run in source.run_records(evidence_id):
        run_id = _run_id(run)
        if target.is_committed(evidence_id, run_id):
            continue
        outputs: Mapping[str, Mapping[str, Any]] = run.record.get("outputs", {})
        with private_workdir(work, "replicate") as folder:
            files = {name: source.fetch_output(evidence_id, run_id, name, folder / name,
                                               expected_sha256=str(facts["sha256"]))
                     for name, facts in outputs.items()}
            target.adopt_run(evidence_id, run_id, files, run)
        _verify_run(target, evidence_id, run)
        copied.runs.append(run_id)
    if not chain.ok:
        _copy_custody(chain, target, evidence_id)   # raises, saying why
    return copied


def _verify_run(store: EvidenceStore, evidence_id: str, run) -> None:
    """Every output of ``run`` as ``store`` gives it back, re-hashed against the run's record."""
    for name, facts in run.record.get("outputs", {}).items():
        if store.hash_output(evidence_id, _run_id(run), name) != (facts["sha256"], facts["size"]):
            raise IntegrityError(f"{name} of run {_run_id(run)} of {evidence_id} reads back from the replica with "
                                 "other bytes")


def _copy_custody(chain: custody.ChainReport, target: EvidenceStore,
                  evidence_id: str) -> Sequence[Mapping[str, Any]]:
    """``chain`` (the source's, as just read) appended to ``target``'s and read back; the events it lacked."""
    if not chain.ok:
        raise CustodyError(f"the custody log of {evidence_id} has problems ({'; '.join(chain.problems[:2])}); "
                           "it is not copied until a person has looked")
    added = target.adopt_custody(evidence_id, chain.events)
    copy = target.custody(evidence_id)
    if [e["hash"] for e in copy.events] != [e["hash"] for e in chain.events]:
        raise IntegrityError(f"the custody log of {evidence_id} reads back from the replica differently")
    return chain.events[len(chain.events) - added:] if added else []


@contextmanager
def replica_errors(name: str) -> Iterator[None]:
    """A replica's own failures (unreachable, refused, throttled, an object it will not give) as
    ReplicaUnavailable: retried later, reported per item, never a traceback."""
    try:
        yield
    except (EvidenceError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - botocore raises one ClientError class per code
        raise ReplicaUnavailable(f"replica {name!r} could not be used: {exc}") from exc


def _unattested(events: Sequence[Mapping[str, Any]], name: str) -> bool:
    """Whether the chain holds events since its last "replicated" event for ``name`` (or has none), other
    replicas' "replicated" events aside: those alone would make replicas chase each other for ever."""
    for event in reversed(events):
        if event.get("event") != custody.REPLICATED:
            return True
        if event.get("details", {}).get("replica") == name:
            return False
    return False


def replicate(primary: EvidenceStore, replica: EvidenceStore, name: str, evidence_id: str, *, actor: str,
              work: Path, progress: Progress = SILENT) -> Copied:
    """Bring replica ``name`` level with the primary for one item, and attest it in the primary's chain.

    What the chain does not yet attest for this replica (even when an
    earlier pass copied it and was killed before it could log) is verified
    as the replica gives it back, then logged as "replicated", an event
    then copied to the replica too.
    """
    with replica_errors(name):
        copied = copy_item(primary, replica, evidence_id, work, progress)
        events = primary.custody(evidence_id).events
        mine = [e for e in events if e.get("event") == custody.REPLICATED and e["details"].get("replica") == name]
        original = replica.has_original(evidence_id) and not any(e["details"].get("original") for e in mine)
        if original and not copied.original:
            replica.verify_original(evidence_id)   # copied by a pass that was stopped before it logged
        attested = {run for e in mine for run in e["details"].get("runs", [])}
        runs = [run for run in primary.run_records(evidence_id) if _run_id(run) not in attested]
        for run in runs:
            if _run_id(run) not in copied.runs:
                _verify_run(replica, evidence_id, run)
        if original or runs or _unattested(events, name):
            primary.append_custody(evidence_id, custody.REPLICATED, actor, {
                "replica": name, "original": original, "runs": [_run_id(run) for run in runs],
                "custody_events": len(copied.events), "verified": "read back from the replica and re-hashed",
            })
            _copy_custody(primary.custody(evidence_id), replica, evidence_id)
            copied.logged = True
    log.info("replicated", extra={"evidence_id": evidence_id, "replica": name, "original": copied.original,
                                  "runs": copied.runs, "custody_events": len(copied.events)})
    return copied


def verify_replica(primary: EvidenceStore, replica: EvidenceStore, evidence_id: str) -> list[str]:
    """Re-read what the replica holds of one item (the original re-hashed after decryption, the intake
    record, every output against its run record): what is wrong. A scrub, for bit rot and tampering."""
    problems = []
    try:
        if primary.has_original(evidence_id):
            replica.verify_original(evidence_id)
        if replica.evidence(evidence_id) != primary.evidence(evidence_id):
            problems.append("its intake record differs from the primary's")
    except (EvidenceError, OSError) as exc:
        problems.append(f"original or intake record: {exc}")
    for run in primary.run_records(evidence_id):
        try:
            if replica.is_committed(evidence_id, _run_id(run)):
                _verify_run(replica, evidence_id, run)
        except (EvidenceError, OSError) as exc:
            problems.append(f"run {_run_id(run)}: {exc}")
    return problems


def restore(replica: EvidenceStore, primary: EvidenceStore, name: str, *, actor: str, work: Path,
            progress: Progress = SILENT) -> tuple[list[str], dict[str, str]]:
    """Rebuild a primary from replica ``name``: (the items restored, the items that failed and why).

    Only ever into a new store, or one that earlier restores left unfinished
    (each item there restored, or a copy of the replica's under way): then
    the items already restored are skipped and the rest are copied (from
    this replica or another).
    """
    done, available = set(), set(replica.evidence_ids())
    for evidence_id in primary.evidence_ids():
        events = primary.custody(evidence_id).events
        if any(e.get("event") == custody.RESTORED for e in events):
            done.add(evidence_id)
        elif not _copy_of(events, replica, evidence_id):
            raise IntegrityError(f"the configured store is not empty: {evidence_id} has a history of its own there; "
                                 "restore only ever fills a new store (or finishes a restore that stopped)")
    restored, failed = [], {}
    for evidence_id in sorted(available - done):
        try:
            with replica_errors(name):
                copy_item(replica, primary, evidence_id, work, progress)
            primary.append_custody(evidence_id, custody.RESTORED, actor, {"replica": name})
        except (EvidenceError, OSError) as exc:
            failed[evidence_id] = str(exc)
            log.error("item not restored", extra={"evidence_id": evidence_id, "replica": name, "reason": str(exc)})
            continue
        restored.append(evidence_id)
    return restored, failed


def _copy_of(events: Sequence[Mapping[str, Any]], replica: EvidenceStore, evidence_id: str) -> bool:
    """Whether ``events`` are the start of the replica's chain for the item: a copy a stopped restore left."""
    try:
        theirs = replica.custody(evidence_id).events
    except NotFound:
        return False
    return [e.get("hash") for e in events] == [e.get("hash") for e in theirs[:len(events)]]


def keep_signing(replica: EvidenceStore, files: Mapping[str, bytes]) -> int:
    """The signing set's files (worker.processing.signing_set) the replica lacks, written and read back;
    how many."""
    held = replica.signing_files()
    lacking = {name: data for name, data in files.items() if name not in held}
    for name, data in lacking.items():
        replica.keep_signing_file(name, data)
    back = replica.signing_files() if lacking else held
    if any(back.get(name) != data for name, data in lacking.items()):
        raise IntegrityError("the signing set reads back from the replica differently")
    return len(lacking)


def opened(replica: EvidenceStore) -> EvidenceStore:
    """A replica ready for copies: what a copy killed mid-way left (its process gone) is removed first."""
    for path in replica.remove_abandoned_uploads():
        log.warning("removed a partial copy left by a replication that was stopped", extra={"path": path})
    return replica


class Replicas:
    """The [[replicas]] a worker keeps level, by queued jobs (one per item and replica, never two waiting).

    Replicas are opened when first needed, so one that is unreachable delays
    only its own jobs (retried with back-off), never intake or processing.
    """

    def __init__(self, names: Sequence[str], open_replica: Callable[[str], EvidenceStore], *, work: Path,
                 actor: str, signing_set: Callable[[], Mapping[str, bytes]] = dict):
        self.names, self._open, self.work, self.actor = list(names), open_replica, work, actor
        self.signing_set = signing_set   # what a restored home needs to verify and sign (signing_set.keepsakes)
        self._opened: dict[str, EvidenceStore] = {}

    def _replica(self, name: str) -> EvidenceStore:
        if name not in self.names:
            raise JobError(f"replica {name!r} is no longer configured ([[replicas]])")
        if name not in self._opened:
            try:
                self._opened[name] = opened(self._open(name))
            except EvidenceError as exc:
                raise ReplicaUnavailable(str(exc)) from exc
            try:
                kept = keep_signing(self._opened[name], self.signing_set())
            except Exception as exc:  # noqa: BLE001 - the items still replicate; the next start tries again
                log.error("signing set not kept", extra={"replica": name, "reason": str(exc)})
            else:
                if kept:
                    log.info("signing set kept", extra={"replica": name, "files": kept})
        return self._opened[name]

    def queue_for(self, queue: JobQueue, evidence_id: str) -> None:
        """Queue a pass over ``evidence_id`` for every replica (after anything changed the item)."""
        if EVIDENCE_ID.match(evidence_id or ""):
            for name in self.names:
                queue.enqueue(evidence_id, REPLICATE, {"replica": name})

    def queue_behind(self, primary: EvidenceStore, queue: JobQueue) -> int:
        """At start: queue a pass for every item some replica lacks anything of; how many were queued."""
        queued = 0
        for name in self.names:
            try:
                replica = self._replica(name)
                found = [lag(primary, replica, i) for i in primary.evidence_ids()]
                for diverged in (f for f in found if f.problems):
                    log.error("replica diverged", extra={"replica": name, "evidence_id": diverged.evidence_id,
                                                         "problems": diverged.problems})
                behind = [f.evidence_id for f in found if f.behind]
            except Exception as exc:  # noqa: BLE001 - one unreachable replica must not stop the worker
                log.warning("replica not checked", extra={"replica": name, "reason": str(exc)})
                continue
            for evidence_id in behind:
                queue.enqueue(evidence_id, REPLICATE, {"replica": name})
                queued += 1
        return queued

    def run(self, primary: EvidenceStore, queue: JobQueue, job: Job, progress: Progress = SILENT) -> Copied:
        name = str(job.params.get("replica", ""))
        copied = replicate(primary, self._replica(name), name, job.evidence_id, actor=self.actor, work=self.work,
                           progress=progress)
        if copied.logged:   # the other replicas now lack that event; their pass copies it and logs nothing
            for other in self.names:
                if other != name:
                    queue.enqueue(job.evidence_id, REPLICATE, {"replica": other})
        return copied
