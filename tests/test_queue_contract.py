"""The JobQueue contract: every queue adapter passes the same tests (SqliteQueue on a file, SqsQueue over
real HTTP to an SQS-speaking server on loopback)."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid

import pytest
from support import aws_client

from pipelines import registry
from pipelines.intake import INTAKE
from worker.backends.sqlite import SqliteQueue
from worker.backends.sqs import SqsQueue
from worker.encryption import keys
from worker.encryption.sealing import PLAIN, Sealing
from worker.jobs.queue import DEAD, QUEUED, JobKind, JobQueue
from worker.processing.replication import REPLICATE

EVIDENCE = "a" * 64


def _queue(request, tmp_path, kind: str) -> JobQueue:
    sealing = Sealing(keys.master(os.urandom(32)), os.urandom(32)) if kind.endswith("sealed") else PLAIN
    if kind.startswith("sqlite"):
        return SqliteQueue(tmp_path / "q.sqlite3", max_attempts=2, backoff_base_s=0, sealing=sealing)
    sqs = aws_client("sqs", request.getfixturevalue("aws_endpoint"))
    name = f"jobs-{uuid.uuid4().hex[:10]}"
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": arn, "maxReceiveCount": 10})})["QueueUrl"]
    return SqsQueue(sqs, url, max_attempts=2, backoff_base_s=0, wait_s=0, sealing=sealing)


@pytest.fixture(params=["sqlite", "sqs", "sqlite-sealed", "sqs-sealed"])
def any_queue(request, tmp_path) -> JobQueue:
    return _queue(request, tmp_path, request.param)


@pytest.fixture(params=["sqlite-sealed", "sqs-sealed"])
def sealed_queue(request, tmp_path) -> JobQueue:
    return _queue(request, tmp_path, request.param)


def _raw(queue: JobQueue) -> bytes:
    """Everything the queue holds as its server or file keeps it."""
    if isinstance(queue, SqliteQueue):
        return b"".join(p.read_bytes() for p in queue.path.parent.glob(queue.path.name + "*"))
    bodies = []
    for url in (queue.url, queue.dead_url):
        answer = queue.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        bodies += [m["Body"].encode() for m in answer.get("Messages", [])]
    return b"".join(bodies)


def test_a_sealed_queue_holds_no_evidence_id_and_no_reason(sealed_queue):
    sealed_queue.enqueue(EVIDENCE, "intake", {"probe.decode_seconds": 5})
    sealed_queue.fail(sealed_queue.lease(60), "REASON-MARKER could not decode", retryable=False)
    other, _ = sealed_queue.enqueue("b" * 64, "intake")
    raw = _raw(sealed_queue)
    assert raw and EVIDENCE.encode() not in raw and b"b" * 64 not in raw and b"REASON-MARKER" not in raw
    [dead] = sealed_queue.jobs(DEAD)
    assert dead.evidence_id == EVIDENCE and "REASON-MARKER" in dead.last_error
    assert sealed_queue.lease(60).evidence_id == "b" * 64


def test_a_leased_job_is_handed_out_once_and_acked(any_queue):
    job, _ = any_queue.enqueue(EVIDENCE, "intake", {"probe.decode_seconds": 5})
    leased = any_queue.lease(60)
    assert (leased.id, leased.evidence_id, leased.pipeline, dict(leased.params), leased.attempts) == \
        (job.id, EVIDENCE, "intake", {"probe.decode_seconds": 5}, 1)
    assert any_queue.lease(60) is None, "a leased job must not be handed out twice"
    assert any_queue.heartbeat(leased, 60)
    assert any_queue.ack(leased)
    assert any_queue.lease(1) is None


def test_a_job_comes_back_as_the_kind_it_was_queued_as(any_queue):
    any_queue.enqueue(EVIDENCE, "intake")
    any_queue.enqueue(EVIDENCE, REPLICATE, {"replica": "offsite"})
    kinds = {job.pipeline: job.kind for job in (any_queue.lease(60), any_queue.lease(60))}
    assert kinds == {"intake": JobKind.RUN, REPLICATE: JobKind.REPLICATE}
    # A pipeline cannot take a name the worker's own jobs use: a run would be dispatched as a copy.
    for name in ("replicate", "upload"):
        with pytest.raises(ValueError, match="worker's own jobs"):
            registry.register(dataclasses.replace(INTAKE, name=name))


def test_an_expired_lease_gives_the_job_to_the_next_worker(any_queue):
    job, _ = any_queue.enqueue(EVIDENCE, "intake")
    assert any_queue.lease(1) is not None
    time.sleep(1.6)
    again = any_queue.lease(60)
    assert again is not None and again.id == job.id and again.attempts == 2
    assert any_queue.ack(again)


def test_a_heartbeat_keeps_the_lease(any_queue):
    any_queue.enqueue(EVIDENCE, "intake")
    leased = any_queue.lease(1)
    assert any_queue.heartbeat(leased, 30)
    time.sleep(1.6)
    assert any_queue.lease(60) is None


def test_failures_retry_then_dead_letter_with_the_reason_and_come_back_on_request(any_queue):
    job, _ = any_queue.enqueue(EVIDENCE, "intake")
    assert any_queue.fail(any_queue.lease(60), "a hiccup", retryable=True) == QUEUED
    leased = any_queue.lease(60)
    assert leased is not None and leased.id == job.id
    assert any_queue.fail(leased, "the file is not a video", retryable=False) == DEAD
    assert any_queue.lease(1) is None
    [dead] = any_queue.jobs(DEAD)
    assert dead.id == job.id and "not a video" in dead.last_error and any_queue.counts()["dead"] == 1
    any_queue.retry_dead(job.id)
    back = any_queue.lease(60)
    assert back is not None and back.id == job.id and any_queue.jobs(DEAD) == []


def test_a_released_job_is_leased_again_at_once_and_keeps_its_attempts(any_queue):
    job, _ = any_queue.enqueue(EVIDENCE, "intake", {"probe.decode_seconds": 5})
    for _ in range(4):   # a full disk gives the job back again and again: that uses up no attempt
        any_queue.release(any_queue.lease(600))
    again = any_queue.lease(60)
    assert again is not None and again.id == job.id and again.attempts == 1
    assert dict(again.params) == {"probe.decode_seconds": 5}
