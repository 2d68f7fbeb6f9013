"""SqliteQueue with real processes sharing one database file."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from support import REPO

from worker.backends.sqlite import SqliteQueue
from worker.jobs.queue import DEAD, DONE, LEASED, QUEUED

EVIDENCE = "a" * 64


def other_process(db: Path, code: str) -> str:
    """Run queue code in a separate Python process; return what it prints."""
    script = f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom worker.backends.sqlite import SqliteQueue\n" \
             f"q = SqliteQueue({str(db)!r}, max_attempts=3, backoff_base_s=0)\n{code}"
    return subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_enqueue_lease_ack(queue: SqliteQueue):
    job, created = queue.enqueue(EVIDENCE, "intake", {"probe.decode_seconds": 5})
    assert created and job.state == QUEUED
    leased = queue.lease(60)
    assert (leased.id, leased.state, leased.attempts) == (job.id, LEASED, 1)
    assert queue.lease(60) is None, "a leased job must not be handed out twice"
    assert queue.ack(leased)
    assert queue.get(job.id).state == DONE
    assert queue.counts()[DONE] == 1


def test_the_same_waiting_job_is_not_queued_twice(queue: SqliteQueue):
    first, created = queue.enqueue(EVIDENCE, "intake", {})
    again, created_again = queue.enqueue(EVIDENCE, "intake", {})
    assert created and not created_again and again.id == first.id
    _, other = queue.enqueue(EVIDENCE, "intake", {}, nonce="new-run")
    assert other


def test_retryable_failures_back_off_then_dead_letter(tmp_path: Path):
    now = [1000.0]
    queue = SqliteQueue(tmp_path / "q.sqlite3", max_attempts=3, backoff_base_s=10, clock=lambda: now[0])
    job, _ = queue.enqueue(EVIDENCE, "intake")
    waits = []
    for attempt in (1, 2):
        leased = queue.lease(60)
        assert leased.attempts == attempt
        assert queue.fail(leased, f"disk hiccup {attempt}", retryable=True) == QUEUED
        assert queue.lease(60) is None and queue.counts()["delayed"] == 1
        waits.append(queue.backoff_s(attempt))
        now[0] += waits[-1]
    assert waits == [10, 20]
    leased = queue.lease(60)
    assert queue.fail(leased, "disk hiccup 3", retryable=True) == DEAD
    dead = queue.jobs(DEAD)
    assert [(j.id, j.last_error) for j in dead] == [(job.id, "disk hiccup 3")]
    retried = queue.retry_dead(job.id)
    assert (retried.state, retried.attempts) == (QUEUED, 0)


def test_permanent_failure_dead_letters_at_once(queue: SqliteQueue):
    queue.enqueue(EVIDENCE, "intake")
    leased = queue.lease(60)
    assert queue.fail(leased, "not a video", retryable=False) == DEAD
    assert queue.get(leased.id).last_error == "not a video"


def test_a_crashed_workers_job_comes_back_after_its_lease_expires(queue: SqliteQueue):
    job, _ = queue.enqueue(EVIDENCE, "intake")
    # Another process leases the job for one second and exits without acking: a crash.
    leased_id, stale_token = other_process(queue.path, "j = q.lease(1.0); print(j.id, j.lease_token)").split()
    assert leased_id == job.id
    assert queue.lease(60) is None
    time.sleep(1.2)
    again = queue.lease(60)
    assert (again.id, again.attempts) == (job.id, 2)
    # The crashed lease's token is stale: its late ack must not count.
    assert not queue.ack(dataclasses.replace(again, lease_token=stale_token))
    assert queue.ack(again)


def test_heartbeat_keeps_a_lease_and_a_lost_lease_is_reported(queue: SqliteQueue):
    queue.enqueue(EVIDENCE, "intake")
    leased = queue.lease(1.0)
    for _ in range(3):
        time.sleep(0.4)
        assert queue.heartbeat(leased, 1.0)
    assert other_process(queue.path, "print(q.lease(60))") == "None"
    time.sleep(1.2)
    assert other_process(queue.path, "print(q.lease(60).attempts)") == "2"
    assert not queue.heartbeat(leased, 1.0)
    assert queue.fail(leased, "late", retryable=True) == LEASED, "a lost lease must not change the job"


def test_a_job_whose_worker_dies_every_time_is_dead_lettered(queue: SqliteQueue):
    job, _ = queue.enqueue(EVIDENCE, "intake")  # max_attempts=2 in this fixture
    for _ in range(2):
        assert queue.lease(0.01) is not None
        time.sleep(0.02)
    assert queue.lease(60) is None
    assert queue.get(job.id).state == DEAD
    assert "lease expired" in queue.get(job.id).last_error


def test_release_gives_a_job_back_without_counting_the_attempt(queue: SqliteQueue):
    queue.enqueue(EVIDENCE, "intake")
    leased = queue.lease(60)
    queue.release(leased)
    again = queue.lease(60)
    assert (again.id, again.attempts) == (leased.id, 1)


def test_two_processes_never_lease_the_same_job(queue: SqliteQueue, tmp_path: Path):
    ids = {queue.enqueue(EVIDENCE, "intake", {"n": n})[0].id for n in range(300)}
    go = tmp_path / "go"
    code = (f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "got = []\nwhile (j := q.lease(60)) is not None:\n    got.append(j.id); q.ack(j); time.sleep(0.003)\n"
            "print(' '.join(got))")
    script = f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom worker.backends.sqlite import SqliteQueue\n" \
             f"q = SqliteQueue({str(queue.path)!r})\n{code}"
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both are up and polling for the start signal
    # (Each pauses briefly between jobs, as real work does: SQLite's busy wait is not fair, and a
    # process that re-takes the write lock in a tight loop can starve the other.)
    go.touch()
    seen = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(seen), f"no contention: one process got every job ({[len(s) for s in seen]})"
    assert sorted(seen[0] + seen[1]) == sorted(ids), "every job exactly once across both processes"
