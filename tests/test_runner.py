"""The runner in-process, on a real store and queue, with the real intake pipeline."""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from worker.backends.local import LocalStore
from worker.backends.sqlite import SqliteQueue
from worker.config import Settings
from worker.errors import JobError, LeaseLost
from worker.jobs.submit import submit
from worker.operations.audit import audit_item
from worker.processing import signing
from worker.processing.runner import Runner
from worker.record import custody


@pytest.fixture
def runner(settings: Settings, store: LocalStore) -> Runner:
    return Runner(store, work_dir=settings.work_dir, tools=settings.tools, actor="runner-test",
                  signing=lambda: signing.load(settings))


def stored_sample(store: LocalStore, recording: Path) -> str:
    with open(recording, "rb") as handle:
        return store.put_original(handle, intake={"original_name": "s.mp4"}, actor="t").evidence_id


def test_a_job_redelivered_after_its_run_committed_is_a_no_op(store, settings: Settings, runner: Runner,
                                                              tiny_video: Path):
    now = [time.time()]
    queue = SqliteQueue(settings.queue_path, max_attempts=2, backoff_base_s=0, clock=lambda: now[0])
    evidence_id = stored_sample(store, tiny_video)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    job = queue.lease(60)
    first = runner.run(job)
    assert first.committed
    # The worker died between commit and ack: the lease runs out and the job is delivered again.
    assert queue.lease(60) is None
    now[0] += 61
    again = queue.lease(60)
    assert (again.id, again.attempts) == (job.id, 2)
    trail = store.custody(evidence_id).events
    second = runner.run(again)
    assert (second.run_id, second.committed) == (first.run_id, False)
    assert store.custody(evidence_id).events == trail, "a no-op must not add custody events"
    assert queue.ack(again)
    assert len(store.run_records(evidence_id)) == 1


def test_a_run_whose_lease_was_lost_is_not_committed(store, queue: SqliteQueue, runner: Runner, tiny_video: Path):
    evidence_id = stored_sample(store, tiny_video)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    job = queue.lease(60)
    lost = threading.Event()
    lost.set()
    with pytest.raises(LeaseLost):
        runner.run(job, lost)
    assert store.run_records(evidence_id) == []
    assert store.custody(evidence_id).events[-1]["event"] == custody.RUN_FAILED
    assert not list(runner.work_dir.iterdir()), "the work folder holds an unredacted copy; it must go"


def test_a_commit_whose_custody_event_was_lost_is_logged_on_redelivery(store, queue: SqliteQueue, runner: Runner,
                                                                       tiny_video: Path):
    evidence_id = stored_sample(store, tiny_video)
    job, rid = submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    leased = queue.lease(60)
    runner.run(leased)
    # What a worker killed right after the commit leaves: a committed run and no 'run committed' event.
    path = store.root / evidence_id / "custody.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"run committed"' in lines[-1]
    path.write_bytes(b"".join(lines[:-1]))
    assert any("no 'run committed' event" in p for p in audit_item(store, queue, evidence_id, "t").problems)

    assert not runner.run(leased).committed
    last = store.custody(evidence_id).events[-1]
    assert (last["event"], last["details"]["run_id"]) == (custody.RUN_COMMITTED, rid)
    assert "recovered" in last["details"]
    assert audit_item(store, queue, evidence_id, "t").ok


def test_a_stop_signal_right_after_the_commit_does_not_mark_the_run_interrupted(store, queue, runner: Runner,
                                                                                tiny_video: Path):
    evidence_id = stored_sample(store, tiny_video)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    job = queue.lease(60)

    @contextmanager
    def signal_arrives_when_leaving_the_commit():
        yield
        if store.run_records(evidence_id):
            raise KeyboardInterrupt  # what the worker's second-signal handler raises

    with pytest.raises(KeyboardInterrupt):
        runner.run(job, protect=signal_arrives_when_leaving_the_commit)
    events = [e["event"] for e in store.custody(evidence_id).events]
    assert events[-1] == custody.RUN_COMMITTED and custody.RUN_INTERRUPTED not in events


def test_equivalent_parameters_make_one_job_and_one_run(store, queue: SqliteQueue, tiny_video: Path):
    evidence_id = stored_sample(store, tiny_video)
    first, rid = submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    for same in ({"probe.decode_seconds": "3"}, {"probe.decode_seconds": 3}, {"probe.decode_seconds": "3.0"}):
        again, again_rid = submit(store, queue, evidence_id, "intake", same, actor="t", reason="test")
        assert (again.id, again_rid) == (first.id, rid)
    other, other_rid = submit(store, queue, evidence_id, "intake", {"probe.decode_seconds": "4"}, actor="t",
                              reason="test")
    assert other.id != first.id and other_rid != rid and other.params == {"probe.decode_seconds": 4.0}


def test_audit_notices_a_deleted_run_and_edited_intake_facts(store, queue: SqliteQueue, runner: Runner,
                                                             tiny_video: Path):
    evidence_id = stored_sample(store, tiny_video)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    outcome = runner.run(queue.lease(60))
    assert audit_item(store, queue, evidence_id, "t").ok
    item = store.root / evidence_id
    record = json.loads((item / "evidence.json").read_text())
    record["original_name"] = "someone-else.mp4"
    (item / "evidence.json").chmod(0o644)
    (item / "evidence.json").write_text(json.dumps(record))
    run_dir = item / "runs" / outcome.run_id
    run_dir.chmod(0o755)
    shutil.rmtree(run_dir)
    problems = "\n".join(audit_item(store, queue, evidence_id, "t").problems)
    assert "'original_name' differs from what the 'ingested' custody event recorded" in problems
    assert f"run {outcome.run_id}: logged as committed, but the run (or its run.json) is gone" in problems


def test_a_job_custody_never_asked_for_is_refused_and_audit_flags_such_a_run(store, queue: SqliteQueue,
                                                                              runner: Runner, tiny_video: Path):
    """A job message put straight into the queue (weaker masking asked for) is not run."""
    evidence_id = stored_sample(store, tiny_video)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    forged, _ = queue.enqueue(evidence_id, "intake", {"redact.min_score": 0.95})
    twin, _ = queue.enqueue(evidence_id, "intake", {}, nonce="forged")   # a request's parameters, another run
    before = store.custody(evidence_id).events
    for job in (forged, twin):
        with pytest.raises(JobError, match="never asked for"):
            runner.run(job)
    assert store.custody(evidence_id).events == before, "a refused job leaves no run in custody"
    assert audit_item(store, None, evidence_id, "t").ok
    # A run committed by a job no request names (before this check existed, or written by hand) is flagged.
    store.append_custody(evidence_id, custody.RUN_COMMITTED, "t", {"run_id": "f" * 16, "job_id": "forged-job"})
    problems = audit_item(store, None, evidence_id, "t").problems
    assert any("committed by job forged-job, which no request in custody asked for" in p for p in problems)
