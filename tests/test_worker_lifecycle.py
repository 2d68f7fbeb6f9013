"""Real worker processes killed, stopped and restarted in the middle of a step."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from support import SAMPLE_VIDEO, Cli

from worker.record import custody


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}): {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def worker_in_step(cli: Cli, tmp_path: Path) -> tuple[str, subprocess.Popen, Path]:
    """A worker process busy in a step that waits until the returned path exists."""
    evidence_id = cli.json("ingest", SAMPLE_VIDEO, "--no-enqueue")["ingested"][0]["evidence_id"]
    started, release = tmp_path / "started", tmp_path / "release"
    cli("reprocess", evidence_id, "--pipeline", "slow", "--set", f"wait.started={started}",
        "--set", f"wait.release={release}", slow=True)
    worker = cli.popen("worker", slow=True)
    wait_for(started, worker)
    return evidence_id, worker, release


def events(cli: Cli, evidence_id: str) -> list[str]:
    log = cli.home / "store" / evidence_id / "custody.jsonl"
    return [json.loads(line)["event"] for line in log.read_text().splitlines()]


def runs_dir(cli: Cli, evidence_id: str) -> Path:
    return cli.home / "store" / evidence_id / "runs"


def test_kill_9_mid_step_then_restart_completes_the_job_exactly_once(cli: Cli, tmp_path: Path):
    cli.env.update(EVIDENCE_QUEUE__VISIBILITY_TIMEOUT_S="1.5", EVIDENCE_WORKER__HEARTBEAT_INTERVAL_S="0.3")
    evidence_id, victim, release = worker_in_step(cli, tmp_path)
    victim.kill()  # SIGKILL: no clean-up code runs
    victim.wait(timeout=10)

    assert not runs_dir(cli, evidence_id).exists() or not any(
        (p / "run.json").exists() for p in runs_dir(cli, evidence_id).iterdir()), "a half run looks committed"
    assert cli.json("status")["queue"]["leased"] == 1
    assert list((cli.home / "work").iterdir()), "the killed worker's work folder is still there"

    release.touch()
    time.sleep(1.6)  # the dead worker's lease runs out
    cli("worker", "--once", slow=True)
    assert not list((cli.home / "work").iterdir()), "the abandoned work folder (an unredacted copy) was removed"
    shown = cli.json("show", evidence_id)
    [run] = shown["runs"]
    assert run["status"] == "committed" and set(run["outputs"]) == {"slow.txt"}
    trail = events(cli, evidence_id)
    assert trail.count(custody.RUN_STARTED) == 2 and trail.count(custody.RUN_COMMITTED) == 1
    cli("worker", "--once", slow=True)
    assert events(cli, evidence_id) == trail, "a finished job ran again"
    status = cli.json("status")
    assert status["queue"]["done"] == 1 and status["queue"]["leased"] == 0
    assert cli.json("audit")["ok"]


def test_sigterm_finishes_the_current_job_then_exits_cleanly(cli: Cli, tmp_path: Path):
    evidence_id, worker, release = worker_in_step(cli, tmp_path)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.7)
    assert worker.poll() is None, "the worker must finish its job before exiting"
    release.touch()
    assert worker.wait(timeout=30) == 0
    assert "stop requested" in worker.stderr.read()
    assert cli.json("show", evidence_id)["runs"][0]["status"] == "committed"
    assert cli.json("status")["queue"]["done"] == 1


def test_a_second_signal_gives_the_job_back_at_once(cli: Cli, tmp_path: Path):
    evidence_id, worker, release = worker_in_step(cli, tmp_path)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 0
    queued = cli.json("status")["queue"]
    assert queued["queued"] == 1 and queued["leased"] == 0
    assert events(cli, evidence_id)[-1] == custody.RUN_INTERRUPTED
    assert not (cli.home / "work").exists() or not list((cli.home / "work").iterdir())

    release.touch()
    cli("worker", "--once", slow=True)
    assert cli.json("show", evidence_id)["runs"][0]["status"] == "committed"
    assert cli.json("status")["queue"]["done"] == 1


def test_an_idle_worker_stops_promptly_on_sigterm(cli: Cli):
    worker = cli.popen("worker")
    started = time.monotonic()
    for line in worker.stderr:   # JSON log lines: the worker has started once it says so
        if "worker started" in line or time.monotonic() - started > 60:
            break
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
