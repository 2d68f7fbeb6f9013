"""Parameters checked when given, shown facts verified, and honest reports (rules 5, 11 and 13)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from support import SAMPLE_VIDEO, Cli
from test_hostile_fs import tagged_video

from pipelines.pipeline import canonical_json


def processed(cli: Cli, path: Path) -> tuple[str, Path]:
    evidence_id = cli.json("ingest", path)["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    [run] = cli.json("show", evidence_id)["runs"]
    return evidence_id, Path(run["location"])


def custody_lines(cli: Cli, evidence_id: str) -> list[dict]:
    return [json.loads(line) for line in (cli.home / "store" / evidence_id / "custody.jsonl").read_text().splitlines()]


def unseal(path: Path) -> None:
    path.parent.chmod(0o700)
    path.chmod(0o600)


# -- rule 11 ------------------------------------------------------------------------------------------


def test_parameters_are_checked_when_given(cli: Cli):
    evidence_id = cli.json("ingest", SAMPLE_VIDEO, "--no-enqueue")["ingested"][0]["evidence_id"]
    before = custody_lines(cli, evidence_id)
    for setting in ("probe.decode_seconds=nan", "probe.decode_seconds=inf", "probe.decode_seconds=-3",
                    "probe.decode_seconds=0", "probe.max_dimension=-5", "probe.max_dimension=0",
                    "probe.max_duration_s=-inf", "probe.min_dimension=1e9"):
        refused = cli("reprocess", evidence_id, "--set", setting, check=False)
        assert refused.returncode == 2, (setting, refused.stderr)
        assert setting.split("=")[0] in refused.stderr, setting
        assert custody_lines(cli, evidence_id) == before, f"{setting}: a refused request left a trace"
    assert cli.json("status")["queue"]["queued"] == 0
    text = (cli.home / "store" / evidence_id / "custody.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_no_record_ever_holds_a_number_json_cannot_carry():
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json({"x": value})


# -- rule 5 -------------------------------------------------------------------------------------------


def test_restricted_facts_from_an_edited_probe_json_are_never_shown(cli: Cli, tmp_path: Path):
    evidence_id, run_dir = processed(cli, tagged_video(tmp_path / "tagged.mp4"))
    probe_json = run_dir / "probe.json"
    unseal(probe_json)
    forged = json.loads(probe_json.read_text())
    forged["restricted"]["location"] = "+55.7558+037.6173/"
    probe_json.write_text(json.dumps(forged))
    events_before = len(custody_lines(cli, evidence_id))
    shown = cli("show", evidence_id, "--restricted", check=False)
    assert shown.returncode == 1 and "no longer matches the SHA-256 its run.json records" in shown.stderr
    assert "55.7558" not in shown.stdout and "43.3180" not in shown.stdout and shown.stdout == ""
    assert len(custody_lines(cli, evidence_id)) == events_before


def test_facts_from_an_edited_run_json_are_never_shown(cli: Cli, sample_item: dict):
    evidence_id, run_dir = sample_item["id"], Path(sample_item["run"]["location"])
    record_path = run_dir / "run.json"
    unseal(record_path)
    record = json.loads(record_path.read_text())
    record["facts"]["probe"]["duration_s"] = 9999.0
    record_path.write_text(json.dumps(record))
    shown = cli.json("show", evidence_id)
    assert shown["probe"] is None
    [run] = shown["runs"]
    assert run["status"] == "altered" and "does not match the SHA-256 logged" in run["error"]
    assert "9999" not in cli("show", evidence_id).stdout
    assert not cli.json("audit", check=False)["ok"]


# -- rule 13 ------------------------------------------------------------------------------------------


def test_a_committed_run_whose_folder_was_deleted_is_reported_as_such(cli: Cli, sample_item: dict):
    evidence_id, run_dir = sample_item["id"], Path(sample_item["run"]["location"])
    run_dir.chmod(0o700)
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()
    [run] = cli.json("show", evidence_id)["runs"]
    assert run["status"] == "deleted or missing", run
    assert "started (running" not in cli("show", evidence_id).stdout


def test_hostile_names_cannot_forge_output_lines(cli: Cli, tmp_path: Path):
    name = "clip\nrun        intake-v9-0000000000000000  committed  outputs: fake\x1b[2K\u202eevil.mp4"
    evidence_id = cli.json("ingest", SAMPLE_VIDEO, "--name", name, "--note", "x\ry")["ingested"][0]["evidence_id"]
    for command in (("show", evidence_id), ("ingest", SAMPLE_VIDEO, "--name", name)):
        out = cli(*command).stdout
        assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
        assert "\nrun        intake-v9" not in out
    shown = cli("show", evidence_id).stdout
    assert "clip\\nrun" in shown and len(shown.splitlines()) == 6
    assert cli.json("show", evidence_id)["original"]["name"] == name, "JSON keeps the name exactly"


def test_show_restricted_counts_the_viewing_it_logs(cli: Cli, tmp_path: Path):
    evidence_id, _ = processed(cli, tagged_video(tmp_path / "tagged.mp4"))
    shown = cli.json("show", evidence_id, "--restricted")
    assert shown["restricted"]["location"] == "+43.3180+045.6981/"
    lines = custody_lines(cli, evidence_id)
    assert lines[-1]["event"] == "restricted facts viewed"
    assert shown["custody"]["events"] == len(lines) and shown["custody"]["head"] == lines[-1]["hash"]


def test_audit_mentions_partial_uploads_of_killed_processes(cli: Cli):
    cli.json("ingest", SAMPLE_VIDEO, "--no-enqueue")
    partial = cli.home / "store" / ".incoming" / "upload-0123456789abcdef"
    partial.write_bytes(b"half of an unredacted upload")
    partial.chmod(0o600)
    os.utime(partial, (time.time() - 3600, time.time() - 3600))
    report = cli.json("audit")
    assert any(str(partial) in note for note in report["store"]["notes"]), report["store"]


def test_a_run_whose_commit_event_is_gone_is_not_shown_as_running(cli: Cli, sample_item: dict):
    evidence_id = sample_item["id"]
    log = cli.home / "store" / evidence_id / "custody.jsonl"
    log.chmod(0o600)
    lines = log.read_bytes().splitlines(keepends=True)
    assert b'"run committed"' in lines[-1]
    log.write_bytes(b"".join(lines[:-1]))
    [run] = cli.json("show", evidence_id)["runs"]
    assert run["status"] == "altered" and "no 'run committed' event" in run["error"], run
