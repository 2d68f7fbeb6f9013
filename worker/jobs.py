"""Putting work in the queue, with a custody event for every job."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pipelines import registry
from pipelines.pipeline import ParameterError, run_id
from worker import custody
from worker.errors import JobError
from worker.queue import Job, JobQueue
from worker.store import EvidenceStore


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
