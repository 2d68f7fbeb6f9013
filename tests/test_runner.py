"""The runner in-process, on a real store and queue, with the real intake pipeline."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import SAMPLE_VIDEO

from worker import custody
from worker.config import Settings
from worker.errors import LeaseLost
from worker.jobs import submit
from worker.local_store import LocalStore
from worker.runner import Runner
from worker.sqlite_queue import SqliteQueue


@pytest.fixture
def runner(settings: Settings, store: LocalStore) -> Runner:
    return Runner(store, work_dir=settings.work_dir, tools=settings.tools, actor="runner-test")


def stored_sample(store: LocalStore) -> str:
    with open(SAMPLE_VIDEO, "rb") as handle:
        return store.put_original(handle, intake={"original_name": "s.mp4"}, actor="t").evidence_id


def test_a_job_redelivered_after_its_run_committed_is_a_no_op(store, queue: SqliteQueue, runner: Runner):
    evidence_id = stored_sample(store)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    job = queue.lease(0.5)
    first = runner.run(job)
    assert first.committed
    # The worker died between commit and ack: the lease runs out and the job is delivered again.
    time.sleep(0.6)
    again = queue.lease(60)
    assert (again.id, again.attempts) == (job.id, 2)
    trail = store.custody(evidence_id).events
    second = runner.run(again)
    assert (second.run_id, second.committed) == (first.run_id, False)
    assert store.custody(evidence_id).events == trail, "a no-op must not add custody events"
    assert queue.ack(again)
    assert len(store.run_records(evidence_id)) == 1


def test_a_run_whose_lease_was_lost_is_not_committed(store, queue: SqliteQueue, runner: Runner):
    evidence_id = stored_sample(store)
    submit(store, queue, evidence_id, "intake", {}, actor="t", reason="test")
    job = queue.lease(60)
    lost = threading.Event()
    lost.set()
    with pytest.raises(LeaseLost):
        runner.run(job, lost)
    assert store.run_records(evidence_id) == []
    assert store.custody(evidence_id).events[-1]["event"] == custody.RUN_FAILED
    assert not list(runner.work_dir.iterdir()), "the work folder holds an unredacted copy; it must go"
