"""Worker: lease jobs, run them, ack or fail them; heartbeats; clean shutdown.

SIGTERM or SIGINT once: lease nothing more, finish the current job, exit 0.
A second signal: stop the current step now and give the job back to the
queue (the attempt is not counted); it never interrupts a store write.

A full disk, or a service a step must use that does not answer (a
time-stamp authority), is an outage, not a bad file: the job goes back to
the queue without counting the attempt and the worker pauses, then tries
again.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from worker.errors import CustodyError, JobError, QueueUnavailable
from worker.fs.space import DiskFull, is_disk_full
from worker.intake.inbox import Inbox
from worker.intake.ingest import ingest_handle
from worker.jobs.queue import DEAD, Job, JobKind, JobQueue
from worker.jobs.requeue import every_lost_job, requeue
from worker.processing.replication import Replicas
from worker.processing.runner import Outcome, Runner, describe, is_outage, is_retryable

log = logging.getLogger("evidence.worker")


class ShutdownNow(KeyboardInterrupt):
    """Raised in the main thread by a second stop signal."""


class _Heartbeat(threading.Thread):
    """Keeps the lease alive while a step runs, however long it takes."""

    def __init__(self, queue: JobQueue, job: Job, interval_s: float, visibility_timeout_s: float):
        super().__init__(name=f"heartbeat-{job.id[:8]}", daemon=True)
        self.queue, self.job = queue, job
        self.interval_s, self.visibility_timeout_s = interval_s, visibility_timeout_s
        self.stop = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        renewed = time.monotonic()
        while not self.stop.wait(self.interval_s):
            try:
                alive = self.queue.heartbeat(self.job, self.visibility_timeout_s)
            except Exception:
                log.exception("heartbeat failed", extra={"job_id": self.job.id})
                # Unrenewed this long, the lease has expired and another worker may hold the job.
                alive = time.monotonic() - renewed < self.visibility_timeout_s
            else:
                renewed = time.monotonic()
            if not alive:
                self.lost.set()
                log.error("lease lost; this run will not be committed", extra={"job_id": self.job.id})
                return


class Worker:
    def __init__(self, queue: JobQueue, runner: Runner, *, visibility_timeout_s: float,
                 heartbeat_interval_s: float, poll_interval_s: float, disk_full_pause_s: float = 60.0,
                 inbox: Inbox | None = None, uploads: Callable[[str, str, str | None], BinaryIO] | None = None,
                 replicas: Replicas | None = None):
        self.queue = queue
        self.runner = runner
        self.visibility_timeout_s = visibility_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.poll_interval_s = poll_interval_s
        self.disk_full_pause_s = disk_full_pause_s
        self.inbox = inbox
        self.uploads = uploads          # opens an uploaded object (bucket, key) that an upload job names
        self.replicas = replicas
        self.outage: str | None = None  # why the last job was given back: a full disk, a service down
        self.dead_lettered = 0          # jobs that failed for good in this run of the worker
        self.stopping = threading.Event()
        self._signals = 0
        self._abortable = False   # inside a job, outside a store write

    # -- signals -----------------------------------------------------------

    def _on_signal(self, signum: int, _frame) -> None:
        self._signals += 1
        if self._signals == 1:
            self.stopping.set()
            log.warning("stop requested: finishing the current job; signal again to give it back now",
                        extra={"signal": signal.Signals(signum).name})
            return
        if self._abortable:
            raise ShutdownNow()
        log.warning("writing to the store; signal again to give the job back",
                    extra={"signal": signal.Signals(signum).name})

    @contextmanager
    def protected(self) -> Iterator[None]:
        """A store write that a stop signal must not cut in half."""
        was, self._abortable = self._abortable, False
        try:
            yield
        finally:
            self._abortable = was

    # -- loop --------------------------------------------------------------

    def run(self, once: bool = False) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        watcher = None
        try:
            if self.inbox is not None:
                if once:
                    self.inbox.scan_settled()
                else:
                    watcher = threading.Thread(target=self.inbox.watch, name="inbox", daemon=True,
                                               args=(self.stopping, self.poll_interval_s))
                    watcher.start()
            self.runner.clean_up_after_crashes()
            self._requeue_lost_jobs()
            if self.replicas is not None:
                self.replicas.queue_behind(self.runner.store, self.queue)
            log.info("worker started", extra={"once": once})
            while not self.stopping.is_set():
                try:
                    job = self.queue.lease(self.visibility_timeout_s)
                except QueueUnavailable as exc:
                    if once:
                        raise  # the command says so in one line and exits 1
                    # Often passing (a full disk, a lock held too long); the queue keeps the jobs.
                    log.error("could not lease a job; trying again", extra={"reason": str(exc)})
                    self.stopping.wait(self.disk_full_pause_s)
                    continue
                if job is None:
                    if once:
                        break
                    self.stopping.wait(self.poll_interval_s)
                    continue
                self.process(job)
                if self.outage:
                    if once:
                        log.error("stopping: the job is back in the queue, no attempt counted",
                                  extra={"reason": self.outage})
                        return 1
                    log.warning("pausing", extra={"reason": self.outage, "pause_s": self.disk_full_pause_s})
                    self.stopping.wait(self.disk_full_pause_s)
        finally:
            self.stopping.set()
            if watcher is not None:
                watcher.join(timeout=30)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("worker stopped", extra={"dead_lettered": self.dead_lettered})
        if once and self.dead_lettered:
            log.error("jobs were dead-lettered: see 'evidence status'", extra={"dead_lettered": self.dead_lettered})
            return 1
        return 0

    def _requeue_lost_jobs(self) -> None:
        """Jobs the custody logs name that the queue does not hold (a lost queue file, a failed enqueue)."""
        for lost in every_lost_job(self.runner.store, self.queue):
            log.warning("the custody log names a job the queue does not hold: queueing it again",
                        extra={"job_id": lost.job_id, "evidence_id": lost.evidence_id})
            try:
                requeue(self.runner.store, self.queue, lost, self.runner.actor)
            except (JobError, CustodyError, DiskFull) as exc:  # one job that cannot be requeued stops no other
                log.error("a lost job could not be queued again", extra={"job_id": lost.job_id,
                                                                         "evidence_id": lost.evidence_id,
                                                                         "reason": str(exc)})

    def _ingest_upload(self, job: Job) -> Outcome:
        """An object uploaded under the upload prefix, stored as an original (streamed, hashed) and its
        intake queued; the uploaded object itself is left where it is (see docs/aws.md on expiring it)."""
        if self.uploads is None:
            raise JobError("an upload event arrived, but this worker has no S3 client to read uploads with")
        bucket, key = str(job.params.get("bucket")), str(job.params.get("key"))
        size = job.params.get("size")
        version = job.params.get("version")
        body = self.uploads(bucket, key, str(version) if version else None)
        try:
            with self.protected():
                done = ingest_handle(self.runner.store, self.queue, body, source=f"s3://{bucket}/{key}",
                                     name=key.rsplit("/", 1)[-1], actor=self.runner.actor,
                                     size=int(size) if isinstance(size, int) else None)
        finally:
            body.close()
        log.info("upload stored", extra={"job_id": job.id, "evidence_id": done.evidence_id,
                                         "duplicate": done.duplicate, "intake_job": done.job_id})
        self._replicate_later(done.evidence_id)
        if done.not_queued:
            raise QueueUnavailable(done.not_queued)
        return Outcome(f"upload {done.evidence_id[:12]}", committed=not done.duplicate)

    def _replicate(self, job: Job) -> Outcome:
        if self.replicas is None:
            raise JobError("a replication job arrived, but this worker has no [[replicas]] configured")
        with self.protected():
            copied = self.replicas.run(self.runner.store, self.queue, job)
        return Outcome(f"replicate to {job.params.get('replica')}", committed=copied.logged)

    def _replicate_later(self, evidence_id: str, job: Job | None = None) -> None:
        """Queue replication of an item this worker just changed (never after a replication job itself)."""
        if self.replicas is None or (job is not None and job.kind is not JobKind.RUN):
            return
        try:
            self.replicas.queue_for(self.queue, evidence_id)
        except QueueUnavailable as exc:   # the start-up sweep queues it next time
            log.error("replication not queued", extra={"evidence_id": evidence_id, "reason": str(exc)})

    def process(self, job: Job) -> None:
        fields = {"job_id": job.id, "evidence_id": job.evidence_id, "pipeline": job.pipeline,
                  "attempt": job.attempts}
        log.info("job leased", extra=fields)
        heartbeat = _Heartbeat(self.queue, job, self.heartbeat_interval_s, self.visibility_timeout_s)
        heartbeat.start()
        self.outage = None
        try:
            self._abortable = True
            if job.kind is JobKind.UPLOAD:
                outcome = self._ingest_upload(job)
            elif job.kind is JobKind.REPLICATE:
                outcome = self._replicate(job)
            else:
                outcome = self.runner.run(job, heartbeat.lost, protect=self.protected)
        except ShutdownNow:
            self._abortable = False
            self.queue.release(job)
            self.stopping.set()
            log.warning("job given back to the queue on shutdown", extra=fields)
            return
        except Exception as exc:
            self._abortable = False
            reason = describe(exc)
            if is_outage(exc):
                self.outage = "the disk is full" if is_disk_full(exc) else reason
                log.error("job paused", extra={**fields, "reason": self.outage})
                try:
                    self.queue.release(job)  # an outage, not a bad file: the attempt does not count
                except QueueUnavailable as failure:  # the queue is on the full disk too; the lease will expire
                    log.error("could not give the job back", extra={**fields, "reason": str(failure)})
                return
            state = self.queue.fail(job, reason, retryable=is_retryable(exc))
            self.dead_lettered += state == DEAD
            level = logging.ERROR if state == DEAD else logging.WARNING
            log.log(level, "job failed", extra={**fields, "reason": reason, "state": state})
            self._replicate_later(job.evidence_id, job)   # its failure is in custody, which replicas keep too
            return
        finally:
            self._abortable = False
            heartbeat.stop.set()
            heartbeat.join()
        acked = self.queue.ack(job)
        self._replicate_later(job.evidence_id, job)
        log.info("job done" if acked else "job done, but its lease was lost before the ack",
                 extra={**fields, "run_id": outcome.run_id, "committed": outcome.committed})
