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


def expected_run_id(evidence_id: str, pipeline: str, params: Mapping[str, Any], nonce: str | None) -> str:
    """The run id a job will produce; JobError if the pipeline or parameters are wrong."""
    try:
        found = registry.get(pipeline)
        return run_id(evidence_id, found, found.resolve_params(params), nonce)
    except (registry.UnknownPipeline, ParameterError) as exc:
        raise JobError(str(exc)) from None


def submit(store: EvidenceStore, queue: JobQueue, evidence_id: str, pipeline: str,
           params: Mapping[str, Any], *, actor: str, reason: str, nonce: str | None = None) -> Job:
    expected_run_id(evidence_id, pipeline, params, nonce)  # refuse now what could never run
    job, created = queue.enqueue(evidence_id, pipeline, params, nonce)
    if created:
        store.append_custody(evidence_id, custody.JOB_ENQUEUED, actor, {
            "job_id": job.id, "pipeline": pipeline, "params": dict(params), "new_run": nonce is not None,
            "reason": reason,
        })
    return job


def reprocess(store: EvidenceStore, queue: JobQueue, evidence_id: str, *, pipeline: str,
              params: Mapping[str, Any], new_run: bool, actor: str) -> tuple[Job, str]:
    """Queue ``pipeline`` again; the same parameters without ``new_run`` name the same run."""
    nonce = uuid.uuid4().hex if new_run else None
    rid = expected_run_id(evidence_id, pipeline, params, nonce)
    store.append_custody(evidence_id, custody.REPROCESS_REQUESTED, actor, {
        "pipeline": pipeline, "params": dict(params), "new_run": new_run, "run_id": rid,
    })
    job = submit(store, queue, evidence_id, pipeline, params, actor=actor, reason="reprocess", nonce=nonce)
    return job, rid
