"""A lost, damaged or unusable queue file, and the command line's one-line errors (rules 8 and 12)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support import REPO, SAMPLE_VIDEO, Cli


def drop_queue(cli: Cli) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cli.home / 'queue.sqlite3'}{suffix}").unlink(missing_ok=True)


def test_a_deleted_queue_loses_no_work(cli: Cli, tmp_path: Path, tiny_video: Path):
    job_id = cli.json("ingest", tiny_video)["ingested"][0]["job_id"]
    drop_queue(cli)
    status = cli("status", "--json")
    assert "the job queue was just created, but the store already holds evidence" in status.stderr
    report = cli.json("audit", check=False)
    assert not report["ok"]
    [problem] = report["results"][0]["problems"]
    assert job_id in problem and "requeue --missing" in problem

    requeued = cli.json("requeue", "--missing")
    assert [job["job_id"] for job in requeued["requeued"]] == [job_id]
    assert cli.json("requeue", "--missing")["requeued"] == [], "requeue must be idempotent"
    cli("worker", "--once")
    assert cli.json("audit")["ok"]
    assert cli.json("show", sample_id(cli))["runs"][0]["status"] == "committed"


def sample_id(cli: Cli) -> str:
    return next(p.name for p in (cli.home / "store").iterdir() if not p.name.startswith("."))


def test_a_worker_starting_on_a_new_queue_requeues_lost_jobs_by_itself(cli: Cli, tiny_video: Path):
    job_id = cli.json("ingest", tiny_video)["ingested"][0]["job_id"]
    drop_queue(cli)
    done = cli("worker", "--once")
    assert "does not hold: queueing it again" in done.stderr and job_id in done.stderr
    assert cli.json("status")["queue"]["done"] == 1
    assert cli.json("audit")["ok"]


def test_a_damaged_queue_file_is_one_clear_line(cli: Cli):
    cli.json("ingest", SAMPLE_VIDEO)
    drop_queue(cli)
    (cli.home / "queue.sqlite3").write_bytes(b"this is not a database, it was overwritten by accident" * 100)
    for command in (("status",), ("worker", "--once"), ("reprocess", sample_id(cli)), ("dead-letters",)):
        done = cli(*command, check=False)
        assert done.returncode == 1, (command, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "file is not a database" in done.stderr and "requeue --missing" in done.stderr, done.stderr


def test_sqlite_unable_to_make_its_wal_files_gives_one_line_and_readers_still_work(cli: Cli):
    cli.json("ingest", SAMPLE_VIDEO)
    (cli.home / "queue.sqlite3-shm").mkdir()  # SQLite cannot create its shared-memory file here
    status = cli.json("status")
    assert status["queue"]["queued"] == 1, "a reader must still see the queue"
    done = cli("worker", "--once", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot be used" in done.stderr


def test_a_closed_output_pipe_ends_quietly(cli: Cli):
    cli.json("ingest", SAMPLE_VIDEO)
    reader_gone = subprocess.Popen(cli.command("status", "--json"), cwd=REPO, env=cli.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # `evidence status | head` where head has already exited
    stderr = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
