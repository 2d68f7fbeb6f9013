"""Fixity audit: re-hash every original, check every custody chain (against its time-stamped heads), every
committed run (and that custody asked for it) and every job.

The audit only reads: it logs its result in each item's chain, but never
repairs what it reports (a damaged chain stays a problem until a worker's
recovery or a person's acknowledgement closes it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from worker.errors import EvidenceError, IntegrityError, NotFound, QueueUnavailable
from worker.jobs.queue import JobQueue
from worker.jobs.requeue import lost_jobs
from worker.jobs.submit import unrequested_runs
from worker.progress import progress_bar
from worker.record import custody, stamps, verified
from worker.record.store import EvidenceStore


@dataclass
class ItemAudit:
    evidence_id: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # not wrong, but worth a look (crash leftovers)
    custody_events: int = 0
    runs_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _check_intake(store: EvidenceStore, item: ItemAudit, chain: custody.ChainReport) -> None:
    try:
        record = store.evidence(item.evidence_id)
    except NotFound:
        item.problems.append("the intake record (evidence.json) is missing: it was deleted, or an intake stopped "
                             "in a way no worker start could complete")
        record = {}
    if record:  # the intake facts were logged in the chain when they were written; they must still agree
        item.problems += verified.intake_problems(record, chain)
    try:
        with progress_bar(record.get("size"), f"re-hashing {item.evidence_id[:12]}") as bar:
            store.verify_original(item.evidence_id, bar)
    except (IntegrityError, NotFound) as exc:
        item.problems.append(str(exc))


def _check_runs(store: EvidenceStore, item: ItemAudit, chain: custody.ChainReport) -> None:
    hashes = {event.get("hash") for event in chain.events}
    committed_events = verified.committed_run_ids(chain)
    runs = verified.runs(store, item.evidence_id, chain)
    lost_log = any(e.get("event") == custody.CUSTODY_ACKNOWLEDGED and (e.get("details") or {}).get("log_missing")
                   for e in chain.events)
    item.problems += [f"run {run_id}: {problem}" for run_id, problem in sorted(runs.problems.items())]
    present = {r["run_id"] for r in runs.records} | set(runs.problems)
    for missing in sorted(committed_events - present):
        item.problems.append(f"run {missing}: logged as committed, but the run (or its run.json) is gone")
    for record in runs.records:
        run_id = record.get("run_id", "?")
        item.runs_checked += 1
        for name, expected in (record.get("outputs") or {}).items():
            try:
                digest, size = store.hash_output(item.evidence_id, run_id, name)
            except NotFound:
                item.problems.append(f"run {run_id}: output {name} is missing")
                continue
            if (digest, size) != (expected.get("sha256"), expected.get("size")):
                item.problems.append(f"run {run_id}: output {name} no longer matches its recorded SHA-256")
        if record.get("custody_anchor") not in hashes:
            if lost_log:
                item.notes.append(f"run {run_id}: its 'run started' event was in the part of the log that was "
                                  "lost (acknowledged)")
            else:
                item.problems.append(f"run {run_id}: its 'run started' custody event is missing from the log")
    for run_id, job_id in unrequested_runs(chain).items():
        item.problems.append(f"run {run_id}: committed by job {job_id}, which no request in custody asked for "
                             "(a job put in the queue by hand, or forged)")
    leftovers = store.uncommitted_leftovers(item.evidence_id)
    item.notes += [f"uncommitted leftover of a crashed run: {path}" for path in leftovers]


def _check_jobs(store: EvidenceStore, queue: JobQueue | None, item: ItemAudit, chain: custody.ChainReport) -> None:
    if queue is None:
        return  # the store-wide report says why
    try:
        item.problems += [lost.describe() for lost in lost_jobs(store, queue, item.evidence_id, chain)]
    except QueueUnavailable as exc:
        item.problems.append(f"jobs not checked: {exc}")


def _check_stamps(store: EvidenceStore, item: ItemAudit, chain: custody.ChainReport,
                  stamp_roots: Sequence[Any]) -> None:
    """The log against its time-stamped heads: a log cut back, or written again, no longer holds them."""
    kept = store.custody_stamps(item.evidence_id)
    item.problems += [f"custody: {problem}" for problem in stamps.problems(kept, chain, item.evidence_id,
                                                                             stamp_roots)]
    good = [s for s in kept if "damaged" not in s]
    if good:
        last = max(good, key=lambda s: int(s["seq"]))
        later = chain.count - 1 - int(last["seq"])
        item.notes.append(f"custody: {len(good)} time-stamped heads; the last, at {last['time']}, vouches for "
                          f"events 0-{last['seq']}" + (f"; {later} later events are not stamped yet" if later > 0
                                                         else ""))
        if not stamp_roots:
            item.notes.append("custody: the time-stamps' signatures were not checked (no trust anchors), only "
                              "what they stamp")


def audit_item(store: EvidenceStore, queue: JobQueue | None, evidence_id: str, actor: str,
               stamp_roots: Sequence[Any] = ()) -> ItemAudit:
    item = ItemAudit(evidence_id)
    chain = store.custody(evidence_id)
    _check_intake(store, item, chain)
    item.custody_events = chain.count
    item.problems += [f"custody: {problem}" for problem in chain.problems]
    item.notes += [f"custody: {repair}" for repair in chain.repairs]
    _check_stamps(store, item, chain, stamp_roots)
    _check_runs(store, item, chain)
    _check_jobs(store, queue, item, chain)
    try:
        store.append_custody(evidence_id, custody.AUDIT_RESULT, actor, {
            "ok": item.ok, "problems": item.problems[:20], "runs_checked": item.runs_checked,
        }, recover=False)
    except EvidenceError as exc:  # a damaged chain, a full disk: reported, never repaired here
        item.problems.append(f"custody: the audit result could not be logged: {exc}")
    return item


def audit_store(store: EvidenceStore, queue: JobQueue | None, actor: str,
                stamp_roots: Sequence[Any] = ()) -> Iterator[ItemAudit]:
    """Every item; one that cannot be read at all is that item's problem, and the others are still audited.
    ``stamp_roots``: the time-stamp authority's root certificates, which its stamps must chain to."""
    for evidence_id in store.evidence_ids():
        try:
            yield audit_item(store, queue, evidence_id, actor, stamp_roots)
        except (EvidenceError, OSError) as exc:
            yield ItemAudit(evidence_id, problems=[f"could not be audited: {exc}"])
