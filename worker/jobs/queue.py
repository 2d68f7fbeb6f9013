"""The JobQueue port: at-least-once delivery with leases, retries and dead letters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

QUEUED, LEASED, DONE, DEAD = "queued", "leased", "done", "dead"


class JobKind(Enum):
    """What a job does. Its value is the name queues store in the job's pipeline field, which pipelines
    therefore cannot take (pipelines.registry refuses them)."""

    RUN = "run"                # run the pipeline the job names for one item
    REPLICATE = "replicate"    # copy one item to the replica params["replica"] names
    UPLOAD = "upload"          # store an object uploaded to S3 (params: bucket, key, version), then run intake

    @classmethod
    def of(cls, pipeline: str) -> JobKind:
        return cls(pipeline) if pipeline in _OWN_JOBS else cls.RUN


_OWN_JOBS = {JobKind.REPLICATE.value, JobKind.UPLOAD.value}


@dataclass(frozen=True)
class Job:
    id: str
    evidence_id: str
    pipeline: str
    params: Mapping[str, Any] = field(default_factory=dict)
    nonce: str | None = None          # set by --new-run: makes a run distinct from earlier ones
    state: str = QUEUED
    attempts: int = 0                 # leases so far, this one included
    max_attempts: int = 1
    lease_token: str | None = None    # proves which lease an ack/fail/heartbeat belongs to
    last_error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def kind(self) -> JobKind:
        return JobKind.of(self.pipeline)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.id, "evidence_id": self.evidence_id, "pipeline": self.pipeline,
            "params": dict(self.params), "new_run": self.nonce is not None, "state": self.state,
            "attempts": self.attempts, "max_attempts": self.max_attempts, "reason": self.last_error,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


class JobQueue(ABC):
    # True when this queue was created empty just now: beside a store that holds items, jobs may have
    # been lost with an earlier queue (see worker.jobs.requeue).
    fresh: bool = False
    # True when get() finds every job the queue holds, so that a job the custody logs name and the queue
    # lacks was lost (worker.jobs.requeue); a queue that cannot be searched (SQS) says False.
    knows_every_job: bool = True

    @abstractmethod
    def enqueue(self, evidence_id: str, pipeline: str, params: Mapping[str, Any] | None = None,
                nonce: str | None = None, job_id: str | None = None) -> tuple[Job, bool]:
        """Add a job; if the same job is already waiting or running, return it instead (and False).

        ``job_id`` re-creates a job the custody log names (after the queue was lost); by default a new id.
        """

    @abstractmethod
    def waiting(self, evidence_id: str, pipeline: str, params: Mapping[str, Any], nonce: str | None) -> Job | None:
        """The job queued or leased for exactly this work, if there is one."""

    @abstractmethod
    def lease(self, visibility_timeout_s: float) -> Job | None:
        """Take the next due job for ``visibility_timeout_s`` seconds; it comes back if not acked."""

    @abstractmethod
    def heartbeat(self, job: Job, visibility_timeout_s: float) -> bool:
        """Extend the lease; False when it was lost (expired and taken by another worker)."""

    @abstractmethod
    def ack(self, job: Job) -> bool:
        """The job is done; False when the lease was lost."""

    @abstractmethod
    def fail(self, job: Job, reason: str, *, retryable: bool) -> str:
        """Record a failure: back to the queue after a backoff, or dead-lettered. Returns the new state."""

    @abstractmethod
    def release(self, job: Job) -> None:
        """Give the job back now, not counting this attempt (graceful shutdown)."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs by state: queued (due now), delayed (waiting out a backoff), leased, done, dead."""

    @abstractmethod
    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]: ...

    @abstractmethod
    def get(self, job_id: str) -> Job: ...

    @abstractmethod
    def retry_dead(self, job_id: str) -> Job:
        """Put a dead-lettered job back in the queue with a fresh set of attempts."""
