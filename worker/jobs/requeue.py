"""Jobs the custody logs promise but the queue no longer holds (a deleted or damaged queue file).

Every job is logged as "job enqueued" in its item's custody chain before a
worker can see it, so the chain is the record of what was asked. A job
whose run never committed and that the queue does not know is lost; it is
queued again under the same job id and logged as "job requeued".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines import registry
from pipelines.pipeline import ParameterError, run_id
from worker.errors import EvidenceError, JobError, NotFound, QueueUnavailable
from worker.jobs.queue import Job, JobQueue
from worker.record import custody
from worker.record.store import EvidenceStore

log = logging.getLogger("evidence.requeue")


@dataclass(frozen=True)
class LostJob:
    evidence_id: str
    job_id: str
    pipeline: str
    params: dict[str, Any]
    nonce: str | None
    new_run: bool
    enqueued_at: str

    def describe(self) -> str:
        return (f"job {self.job_id} ({self.pipeline}, queued {self.enqueued_at}) is not in the queue and its run"
                " never committed: run 'evidence requeue --missing'")


def lost_jobs(store: EvidenceStore, queue: JobQueue, evidence_id: str, chain: custody.ChainReport) -> list[LostJob]:
    committed = {(e.get("details") or {}).get("run_id") for e in chain.events
                 if e.get("event") == custody.RUN_COMMITTED}
    latest: dict[str, dict] = {}  # job id -> its last "job enqueued" or "job requeued" event
    for event in chain.events:
        details = event.get("details")
        if event.get("event") in (custody.JOB_ENQUEUED, custody.JOB_REQUEUED) and isinstance(details, dict):
            latest[str(details.get("job_id"))] = event
    lost = []
    for event in latest.values():
        details = event["details"]
        if details.get("run_id") in committed:
            continue
        try:
            queue.get(str(details.get("job_id")))
            continue
        except NotFound:
            pass
        job = LostJob(evidence_id, str(details.get("job_id")), str(details.get("pipeline")),
                      dict(details.get("params") or {}), details.get("nonce"), bool(details.get("new_run")),
                      str(event.get("ts")))
        if queue.waiting(evidence_id, job.pipeline, job.params, job.nonce) is None:  # else: the same work waits
            lost.append(job)
    return lost


def every_lost_job(store: EvidenceStore, queue: JobQueue) -> Iterator[LostJob]:
    """Lost jobs of every item; an item that cannot be read is logged and skipped, never stops the rest."""
    if not queue.knows_every_job:
        return
    for evidence_id in store.evidence_ids():
        try:
            found = lost_jobs(store, queue, evidence_id, store.custody(evidence_id))
        except (EvidenceError, OSError) as exc:
            if isinstance(exc, QueueUnavailable):
                raise
            log.error("custody could not be read to find lost jobs", extra={"evidence_id": evidence_id,
                                                                          "reason": str(exc)})
            continue
        yield from found


def requeue(store: EvidenceStore, queue: JobQueue, lost: LostJob, actor: str) -> Job:
    """Queue ``lost`` again under its own id, and log that in its custody chain."""
    nonce = lost.nonce
    if lost.new_run and nonce is None:
        nonce = uuid.uuid4().hex  # logged before nonces were: the same "new run" cannot be named again
    try:
        pipeline = registry.get(lost.pipeline)
        rid = run_id(lost.evidence_id, pipeline, pipeline.resolve_params(lost.params), nonce)
    except (registry.UnknownPipeline, ParameterError) as exc:
        raise JobError(f"job {lost.job_id} of {lost.evidence_id} cannot be queued again as it was asked: {exc}; "
                       f"queue it anew with 'evidence reprocess {lost.evidence_id[:12]}'") from None
    store.append_custody(lost.evidence_id, custody.JOB_REQUEUED, actor, {  # logged first, as every job is
        "job_id": lost.job_id, "pipeline": lost.pipeline, "params": lost.params, "nonce": nonce, "run_id": rid,
        "reason": "the queue did not hold this job (its file was deleted, replaced or damaged, or it could not "
                  "take the job when it was asked)",
    })
    job, _ = queue.enqueue(lost.evidence_id, lost.pipeline, lost.params, nonce, job_id=lost.job_id)
    log.warning("queued a lost job again", extra={"job_id": job.id, "evidence_id": lost.evidence_id, "run_id": rid})
    return job
