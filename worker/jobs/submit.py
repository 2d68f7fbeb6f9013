"""Putting work in the queue, with a custody event for every job; and finding that event again.

The custody chain is the record of what was asked: a worker runs a job only
if the item's chain holds the request for it (an ingest's or a reprocess's
"job enqueued", or the "job requeued" of a lost one; a retried dead letter
keeps its id), with the same pipeline, parameters and run. A job message
written straight into the queue (a forged one asking for weaker masking)
has none, and is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pipelines import registry
from pipelines.pipeline import ParameterError, run_id
from worker.errors import JobError
from worker.jobs.queue import Job, JobQueue
from worker.record import custody
from worker.record.store import EvidenceStore


def _checked(evidence_id: str, pipeline: str, params: Mapping[str, Any], nonce: str | None) -> tuple[dict, str]:
    """(the parameters in their one canonical form, the run id they name); JobError if they can never run."""
    try:
        found = registry.get(pipeline)
        overrides = found.overrides(params)
        return overrides, run_id(evidence_id, found, found.resolve_params(overrides), nonce)
    except (registry.UnknownPipeline, ParameterError) as exc:
        raise JobError(str(exc)) from None


def submit(store: EvidenceStore, queue: JobQueue, evidence_id: str, pipeline: str,
           params: Mapping[str, Any], *, actor: str, reason: str, nonce: str | None = None) -> tuple[Job, str]:
    """Queue a job (once: the same waiting job is not queued twice); returns it and its run id.

    The job is logged in custody before the queue is asked to take it: a job
    the queue then fails to take (locked, full disk) is still on record, and
    the next worker start or 'requeue --missing' queues it.
    """
    overrides, rid = _checked(evidence_id, pipeline, params, nonce)
    same = queue.waiting(evidence_id, pipeline, overrides, nonce)
    if same is not None:
        return same, rid
    job_id = uuid.uuid4().hex
    store.append_custody(evidence_id, custody.JOB_ENQUEUED, actor, {
        "job_id": job_id, "pipeline": pipeline, "params": overrides, "new_run": nonce is not None,
        "nonce": nonce, "run_id": rid, "reason": reason,
    })
    job, _ = queue.enqueue(evidence_id, pipeline, overrides, nonce, job_id=job_id)
    return job, rid


def reprocess(store: EvidenceStore, queue: JobQueue, evidence_id: str, *, pipeline: str,
              params: Mapping[str, Any], new_run: bool, actor: str) -> tuple[Job, str]:
    """Queue ``pipeline`` again; the same parameters without ``new_run`` name the same run."""
    nonce = uuid.uuid4().hex if new_run else None
    overrides, rid = _checked(evidence_id, pipeline, params, nonce)
    store.append_custody(evidence_id, custody.REPROCESS_REQUESTED, actor, {
        "pipeline": pipeline, "params": overrides, "new_run": new_run, "run_id": rid,
    })
    return submit(store, queue, evidence_id, pipeline, overrides, actor=actor, reason="reprocess", nonce=nonce)


def _canonical(pipeline: str, params: Any) -> dict | None:
    try:
        return registry.get(pipeline).overrides(params if isinstance(params, Mapping) else {})
    except (registry.UnknownPipeline, ParameterError):
        return None


def request_for(chain: custody.ChainReport, job: Job) -> dict | None:
    """The custody event that asked for ``job``: same job id, pipeline, parameters and nonce; None if none."""
    wanted = _canonical(job.pipeline, job.params)
    for event in chain.events:
        details = event.get("details")
        if (event.get("event") in (custody.JOB_ENQUEUED, custody.JOB_REQUEUED) and isinstance(details, dict)
                and details.get("job_id") == job.id and details.get("pipeline") == job.pipeline
                and details.get("nonce") == job.nonce and wanted is not None
                and _canonical(job.pipeline, details.get("params")) == wanted):
            return event
    return None


def unrequested_runs(chain: custody.ChainReport) -> dict[str, str]:
    """Run id -> job id of every committed run whose job no request in the chain names."""
    asked = {str((e.get("details") or {}).get("job_id")) for e in chain.events
             if e.get("event") in (custody.JOB_ENQUEUED, custody.JOB_REQUEUED) and isinstance(e.get("details"), dict)}
    found = {}
    for event in chain.events:
        details = event.get("details") if isinstance(event.get("details"), dict) else {}
        if event.get("event") == custody.RUN_COMMITTED and str(details.get("job_id")) not in asked:
            found[str(details.get("run_id"))] = str(details.get("job_id"))
    return found
