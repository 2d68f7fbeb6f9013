"""Runner: one job in, one committed run (or a clear failure) out.

It fetches a verified copy of the original into a private work folder, runs
the pipeline's steps in order, and hands their files to the store, which
writes run.json last. Custody events frame every attempt. The run id is
derived from the job, so a redelivered job for a committed run does nothing.
"""

from __future__ import annotations

import logging
import platform
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import Registry
from pipelines import registry
from pipelines.errors import ServiceDown, StepError
from pipelines.pipeline import ParameterError, Pipeline, StepContext, Tools, run_id
from worker import __version__
from worker.errors import JobError, LeaseLost, NotFound
from worker.fs.directory import Directory
from worker.fs.space import DiskFull, ensure_free, is_disk_full, judged, written_bytes
from worker.fs.workdirs import private_workdir, remove_abandoned
from worker.jobs.queue import Job
from worker.jobs.submit import request_for
from worker.processing.reuse import earlier, finished, input_key, reuse
from worker.progress import counted, progress_bar
from worker.record import custody
from worker.record.stamps import stamp_custody
from worker.record.store import EvidenceStore
from worker.record.timestamps import utc_now

log = logging.getLogger("evidence.runner")


@dataclass(frozen=True)
class Outcome:
    run_id: str
    committed: bool          # False: the run was already committed, nothing was done
    record: Mapping[str, Any] | None = None


def is_outage(error: BaseException) -> bool:
    """Something outside the job is down (the disk is full, a service does not answer): the job waits, its
    attempt not counted, instead of being blamed for it."""
    return is_disk_full(error) or isinstance(error, ServiceDown)


def is_retryable(error: BaseException) -> bool:
    if hasattr(error, "retryable"):  # ours, the pipelines' and the model registry's errors say so themselves
        return bool(error.retryable)
    return not isinstance(error, (ValueError, TypeError, KeyError))


def describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if hasattr(error, "retryable") else f"{type(error).__name__}: {text}"


def plan(job: Job) -> tuple[Pipeline, dict[str, Any], str]:
    """The pipeline, effective parameters and run id of ``job``; JobError if it can never run."""
    try:
        pipeline = registry.get(job.pipeline)
        params = pipeline.resolve_params(job.params)
    except (registry.UnknownPipeline, ParameterError) as exc:
        raise JobError(str(exc)) from None
    return pipeline, params, run_id(job.evidence_id, pipeline, params, job.nonce)


class Runner:
    def __init__(self, store: EvidenceStore, *, work_dir: Path, tools: Tools, actor: str, min_free_bytes: int = 0,
                 models: Registry | None = None, staff: Callable[[], tuple] = tuple,
                 signing: Callable[[], Any] = lambda: None, timestamp_url: str | None = None):
        self.store = store
        self.timestamp_url = timestamp_url   # an RFC 3161 authority that stamps the custody head after each run
        self.signing = signing  # the credentials steps sign with; loaded (and checked) once per run
        self.staff = staff  # read at every run: enrolment changes while the worker runs
        self.models = models or Registry()  # the default model cache, as the settings give it by default
        self.work_dir = Path(work_dir)
        self.tools = tools
        self.actor = actor
        self.min_free_bytes = min_free_bytes

    def run(self, job: Job, lease_lost: threading.Event | None = None,
            protect: Callable[[], AbstractContextManager] = nullcontext) -> Outcome:
        """Run ``job``; store writes happen inside ``protect()`` (the worker's shield from stop signals)."""
        pipeline, params, rid = plan(job)
        try:
            evidence = self.store.evidence(job.evidence_id)
        except NotFound:
            raise JobError(f"no evidence item {job.evidence_id} in the store") from None
        if request_for(self.store.custody(job.evidence_id), job) is None:
            log.error("job refused: custody holds no request for it",
                      extra={"job_id": job.id, "evidence_id": job.evidence_id, "params": dict(job.params)})
            raise JobError(f"job {job.id} was never asked for: the item's custody holds no request (ingest, "
                           "reprocess or requeue) with this job id, pipeline and parameters; it is not run")
        if self.store.is_committed(job.evidence_id, rid):
            log.info("run already committed; nothing to do", extra={"job_id": job.id, "run_id": rid})
            with protect():
                self._log_commit_if_missing(job, rid)
            return Outcome(rid, committed=False)

        # Checked before anything is logged: a full disk pauses the job and leaves no trace in custody.
        Directory.open(self.work_dir, create=True).close()
        ensure_free(self.work_dir, int(evidence.get("size") or 0), self.min_free_bytes,
                    "hold the run's derivatives (about the original's size)")
        with protect():
            self.store.discard_uncommitted(job.evidence_id, rid)
            started = self.store.append_custody(job.evidence_id, custody.RUN_STARTED, self.actor, {
                "run_id": rid, "pipeline": pipeline.name, "version": pipeline.version, "params": params,
                "job_id": job.id, "attempt": job.attempts,
            })
        committed = None
        free_at_start = shutil.disk_usage(self.work_dir).free
        try:
            with private_workdir(self.work_dir, rid) as workdir:
                try:
                    record, files = self._run_steps(job, evidence, pipeline, params, rid, workdir, started)
                except Exception as exc:
                    if not is_disk_full(exc):
                        raise
                    size = int(evidence.get("size") or 0)
                    verdict = judged(exc, written_bytes(workdir) - size, free_at_start, size)
                    if verdict is exc:
                        raise
                    raise verdict from exc
                if lease_lost is not None and lease_lost.is_set():
                    raise LeaseLost("the job's lease was lost during the run; another worker may be running it")
                with protect():
                    committed = self.store.commit_run(job.evidence_id, rid, files, record)
                    if committed is not None:
                        self.store.append_custody(job.evidence_id, custody.RUN_COMMITTED, self.actor, {
                            "run_id": rid, "job_id": job.id, "outputs": committed.record["outputs"],
                            "record_sha256": committed.sha256,
                        })
        except BaseException as exc:
            if committed is not None or self.store.is_committed(job.evidence_id, rid):
                raise  # the run is committed; a late error or stop signal changes nothing about it
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit)) or is_outage(exc)
            try:
                with protect():
                    self.store.append_custody(
                        job.evidence_id, custody.RUN_INTERRUPTED if interrupted else custody.RUN_FAILED, self.actor,
                        {"run_id": rid, "job_id": job.id, "attempt": job.attempts,
                         "error": describe(exc), "retryable": interrupted or is_retryable(exc)},
                    )
            except DiskFull:
                log.error("the run's end could not be logged: the disk is full", extra={"run_id": rid})
            raise
        if committed is None:
            log.info("another attempt committed this run first", extra={"job_id": job.id, "run_id": rid})
            return Outcome(rid, committed=False)
        stamp_custody(self.store, job.evidence_id, self.timestamp_url)
        return Outcome(rid, committed=True, record=committed.record)

    def _log_commit_if_missing(self, job: Job, rid: str) -> None:
        """A worker killed between commit and custody event leaves a committed run unlogged; log it now."""
        chain = self.store.custody(job.evidence_id)
        if any(e.get("event") == custody.RUN_COMMITTED and (e.get("details") or {}).get("run_id") == rid
               for e in chain.events):
            return
        stored = next(r for r in self.store.run_records(job.evidence_id) if r.record.get("run_id") == rid)
        self.store.append_custody(job.evidence_id, custody.RUN_COMMITTED, self.actor, {
            "run_id": rid, "job_id": stored.record.get("job_id"), "outputs": stored.record.get("outputs"),
            "record_sha256": stored.sha256,
            "recovered": "the worker that committed this run stopped before logging it",
        })
        log.warning("logged a run committed by a worker that stopped before logging it",
                    extra={"job_id": job.id, "run_id": rid})

    def clean_up_after_crashes(self) -> None:
        """After processes that died: remove their work folders and partial uploads (they hold unredacted
        bytes), and finish or roll back the intakes and custody writes they left half-done."""
        remove_abandoned(self.work_dir)
        for path in self.store.remove_abandoned_uploads():
            log.warning("removed a partial upload of a process that stopped mid-copy", extra={"path": path})
        for what in self.store.recover(self.actor):
            log.warning("recovered after a process that stopped mid-write", extra={"detail": what})

    def _run_steps(self, job: Job, evidence: Mapping[str, Any], pipeline: Pipeline, params: dict[str, Any], rid: str,
                   workdir: Path, started: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
        inputs = workdir / "input"
        inputs.mkdir()
        with progress_bar(evidence.get("size"), "verifying original") as bar:
            original = self.store.original_for_run(job.evidence_id, inputs, bar)

        files: dict[str, Path] = {}
        facts: dict[str, Mapping[str, Any]] = {}
        needs = pipeline.needs(params)
        signing = self.signing() if "signing" in needs else None
        staff = self.staff() if "staff" in needs else ()
        finished_runs = [] if job.nonce else finished(self.store, job.evidence_id)
        redone = {step.name for step in pipeline.steps if step.replaces}
        steps, warnings, tools, models = [], [], {}, {}
        with progress_bar(len(pipeline.steps), f"{pipeline.name} steps", unit="step") as bar:
            for step in pipeline.steps:
                with counted(step.name, "part") as progress:   # the step's own bar, under the steps'
                    step_dir = workdir / step.name
                    step_dir.mkdir()
                    context = StepContext(
                        evidence_id=job.evidence_id, original=original, workdir=step_dir,
                        params=pipeline.step_params(step, params), facts=dict(facts), tools=self.tools,
                        models=self.models, languages=tuple(evidence.get("languages") or ()), outputs=dict(files),
                        staff=staff,
                        signing=signing,
                        run_id=rid, pipeline=f"{pipeline.name}-v{pipeline.version}",
                        models_used={name: dict(used) for name, used in models.items()},
                        progress=progress,
                    )
                    began = time.monotonic()
                    key = input_key(step, context)
                    found = earlier(finished_runs, step.name, key, redone)
                    log.info("step reused" if found else "step started",
                             extra={"job_id": job.id, "run_id": rid, "step": step.name,
                                    "reused_from": found[0]["run_id"] if found else None})
                    result = reuse(self.store, job.evidence_id, *found, step_dir) if found else step.run(context)
                    duration = round(time.monotonic() - began, 3)
                    for name, path in result.files.items():
                        if name in files and name not in step.replaces:
                            raise StepError(f"step {step.name!r} returned output {name!r}, which an earlier step made")
                        files[name] = Path(path)  # a replaced output (the unsigned video) is not stored
                    facts[step.name] = dict(result.facts)
                    warnings += [f"{step.name}: {text}" for text in result.warnings]
                    tools.update(result.tools)
                    if result.models:
                        models[step.name] = dict(result.models)
                    entry = {"name": step.name, "duration_s": duration, "outputs": sorted(result.files),
                             "input_key": key}
                    if found:
                        entry["reused_from"] = found[0]["run_id"]
                    steps.append(entry)
                    log.info("step finished",
                             extra={"job_id": job.id, "run_id": rid, "step": step.name, "duration_s": duration})
                    bar.update(1)
        record = {
            "schema": 1,
            "evidence_id": job.evidence_id,
            "run_id": rid,
            "pipeline": pipeline.name,
            "version": pipeline.version,
            "params": params,
            "new_run_nonce": job.nonce,
            "job_id": job.id,
            "attempt": job.attempts,
            "operator": self.actor,
            "started_at": started["ts"],
            "finished_at": utc_now(),
            "custody_anchor": started["hash"],
            "steps": steps,
            "facts": facts,
            "errors": warnings,  # problems steps reported that did not stop the run
            "tools": {"evidence-worker": __version__, "python": platform.python_version(), **tools},
            "models": models,  # by step: each model's name, kind, licence and the SHA-256 of its files
            "limits": {"threads": self.tools.threads, "memory_limit_bytes": self.tools.memory_limit_bytes,
                       "max_pixels": self.tools.max_pixels, "timeout_s": self.tools.timeout_s},
        }
        return record, files
