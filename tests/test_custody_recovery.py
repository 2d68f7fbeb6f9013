"""A custody line cut short: repaired only by a writer's recovery path, never by a reader (rule 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import REPO, SAMPLE_VIDEO, Cli

from worker.record import custody

DIE_MID_APPEND = REPO / "tests" / "helpers" / "die_mid_append.py"


def stored(cli: Cli) -> tuple[str, Path]:
    evidence_id = cli.json("ingest", SAMPLE_VIDEO, "--no-enqueue")["ingested"][0]["evidence_id"]
    return evidence_id, cli.home / "store" / evidence_id / "custody.jsonl"


def audit(cli: Cli) -> dict:
    return cli.json("audit", check=False)


def test_a_write_that_died_half_way_is_repaired_by_the_next_worker_and_never_by_the_audit(cli: Cli):
    evidence_id, log = stored(cli)
    died = subprocess.run([sys.executable, str(DIE_MID_APPEND), str(cli.home / "store"), evidence_id],
                          capture_output=True, text=True)
    assert died.returncode == -9, died.stderr
    damaged = log.read_bytes()
    assert not damaged.endswith(b"\n"), "the test is void: the line was not cut"

    for _ in range(2):  # the audit reports, and reporting changes nothing
        report = audit(cli)
        assert not report["ok"]
        assert any("interrupted" in p for p in report["results"][0]["problems"]), report["results"][0]["problems"]
        assert log.read_bytes() == damaged
    assert cli("show", evidence_id).returncode == 0 and log.read_bytes() == damaged

    cli("worker", "--once")  # a writer's recovery path: the worker start
    report = audit(cli)
    assert report["ok"], report
    assert any("interrupted write of this software was removed" in n for n in report["results"][0]["notes"])
    text = log.read_text()
    assert custody.CUSTODY_REPAIRED in text and "dying-writer" not in text


def test_a_line_cut_by_someone_else_stays_a_problem_until_a_person_acknowledges_it(cli: Cli):
    evidence_id, log = stored(cli)
    cli("reprocess", evidence_id)  # the last event is now "job enqueued"
    log.chmod(0o600)
    log.write_bytes(log.read_bytes()[:-30])
    damaged = log.read_bytes()
    for _ in range(2):
        assert not audit(cli)["ok"]
    cli("worker", "--once", check=False)   # its job may fail on the damaged log; the log itself must not change
    assert log.read_bytes() == damaged, "a worker 'repaired' damage no interrupted write explains"
    assert not audit(cli)["ok"]
    refused = cli("reprocess", evidence_id, check=False)
    assert refused.returncode == 1 and "acknowledge" in refused.stderr
    cli("custody", "acknowledge", evidence_id[:12], "--reason", "cut when the laptop's battery died; checked")
    assert log.read_bytes().startswith(damaged + b"\n")
    report = audit(cli)
    assert report["ok"], report
    assert any("battery died" in note for note in report["results"][0]["notes"])
    again = cli("custody", "acknowledge", evidence_id, "--reason", "again", check=False)
    assert again.returncode == 1 and "nothing to acknowledge" in again.stderr


def test_a_deleted_custody_log_is_never_rebuilt_by_an_audit_or_a_worker(cli: Cli):
    evidence_id, log = stored(cli)
    log.unlink()
    for _ in range(2):
        report = audit(cli)
        assert not report["ok"] and any("missing or empty" in p for p in report["results"][0]["problems"])
        assert not log.exists(), "a reader started a new chain"
    cli("worker", "--once")
    assert not log.exists() and not audit(cli)["ok"]
