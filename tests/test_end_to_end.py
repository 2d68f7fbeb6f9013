"""The real ``evidence`` command, end to end on the embedded default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import SAMPLE_VIDEO, Cli, ffmpeg

from worker.record import custody


def custody_events(cli: Cli, evidence_id: str) -> list[dict]:
    path = cli.home / "store" / evidence_id / "custody.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_ingest_worker_show_audit(cli: Cli):
    ingested = cli.json("ingest", SAMPLE_VIDEO, "--case", "C-17", "--collected-by", "team 2",
                        "--languages", "ru,ce", "--note", "interview 1")
    [item] = ingested["ingested"]
    evidence_id = item["evidence_id"]
    assert item["duplicate"] is False and item["job_id"]
    assert cli.json("status")["queue"]["queued"] == 1

    cli("worker", "--once")
    shown = cli.json("show", evidence_id[:10])
    assert shown["evidence_id"] == evidence_id
    original = shown["original"]
    assert (original["name"], original["size"], original["sha256"]) == (
        "street-walkers-1080p.mp4", SAMPLE_VIDEO.stat().st_size, evidence_id)
    assert (original["case"], original["collected_by"], original["languages"]) == ("C-17", "team 2", ["ru", "ce"])
    assert shown["probe"]["video"]["width"] == 1920
    assert "restricted" not in shown
    [run] = shown["runs"]
    assert run["status"] == "committed" and set(run["outputs"]) == {
        "probe.json", "transcript.json", "transcript.vtt", "transcript.srt", "transcript.txt", "redacted.mp4",
        "redaction-report.json"}
    redaction = shown["redaction"]
    assert redaction["policy"] == "all" and redaction["frames"] == 105 and redaction["tracks_masked"] > 5
    shown_text = cli("show", evidence_id[:10]).stdout
    assert "face tracks masked" in shown_text and "TEST CA, not for production" in shown_text
    assert shown["signature"]["test_ca"] is True and shown["signature"]["algorithm"] == "ES256"
    assert shown["custody"]["chain_ok"] is True
    assert [e["event"] for e in custody_events(cli, evidence_id)] == [
        custody.INGESTED, custody.JOB_ENQUEUED, custody.RUN_STARTED, custody.RUN_COMMITTED]

    run_dir = Path(run["location"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["pipeline"] == "intake" and record["tools"]["ffprobe"].startswith("ffprobe version")
    assert [step["name"] for step in record["steps"]] == ["probe", "transcribe", "redact", "sign"]
    assert set(record["models"]["redact"]) == {"yunet-2023mar", "centerface"}   # centerface: the leak check
    assert record["steps"][0]["duration_s"] > 0
    assert "restricted" not in json.dumps(record["facts"])

    audit = cli.json("audit")
    assert audit["ok"] and audit["items"] == 1
    assert cli.json("status")["queue"]["done"] == 1


def test_same_file_again_is_a_logged_duplicate_and_changes_no_run(cli: Cli, sample_item: dict):
    first = {"evidence_id": sample_item["id"]}
    again = cli.json("ingest", SAMPLE_VIDEO, "--name", "renamed copy.mp4")["ingested"][0]
    assert again["evidence_id"] == first["evidence_id"] and again["duplicate"] is True
    cli("worker", "--once")  # the redelivered intake job finds its run committed: a no-op
    shown = cli.json("show", first["evidence_id"])
    assert len(shown["runs"]) == 1
    events = [e["event"] for e in custody_events(cli, first["evidence_id"])]
    assert events.count(custody.RUN_COMMITTED) == 1 and events.count(custody.RUN_STARTED) == 1
    assert custody.DUPLICATE_UPLOAD in events
    assert cli.json("status")["queue"]["done"] == 2


@pytest.mark.slow
def test_reprocess_makes_new_runs_beside_the_old_ones(cli: Cli, tiny_video: Path):
    evidence_id = cli.json("ingest", tiny_video)["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    [first] = cli.json("show", evidence_id)["runs"]
    first_record = (Path(first["location"]) / "run.json").read_bytes()

    same = cli.json("reprocess", evidence_id)
    assert same["run_id"] == first["run_id"] and same["already_committed"] is True
    changed = cli.json("reprocess", evidence_id, "--set", "probe.decode_seconds=1")
    fresh = cli.json("reprocess", evidence_id, "--new-run")
    assert len({first["run_id"], changed["run_id"], fresh["run_id"]}) == 3
    cli("worker", "--once")
    runs = {run["run_id"]: run for run in cli.json("show", evidence_id)["runs"]}
    assert set(runs) == {first["run_id"], changed["run_id"], fresh["run_id"]}
    assert all(run["status"] == "committed" for run in runs.values())
    assert runs[changed["run_id"]]["params"]["probe.decode_seconds"] == 1.0
    assert (Path(first["location"]) / "run.json").read_bytes() == first_record, "an earlier run changed"
    assert cli.json("audit")["ok"]


def test_reprocess_refuses_unknown_pipelines_and_parameters(cli: Cli):
    evidence_id = cli.json("ingest", SAMPLE_VIDEO, "--no-enqueue")["ingested"][0]["evidence_id"]
    bad = cli("reprocess", evidence_id, "--pipeline", "nope", check=False)
    assert bad.returncode == 2 and "no pipeline named 'nope'" in bad.stderr
    bad = cli("reprocess", evidence_id, "--set", "probe.decode_secs=2", check=False)
    assert bad.returncode == 2 and "has no parameter 'probe.decode_secs'" in bad.stderr
    bad = cli("reprocess", evidence_id, "--set", "probe.decode_seconds=soon", check=False)
    assert bad.returncode == 2 and "takes a float" in bad.stderr
    missing = cli("show", "abcdef123456", check=False)
    assert missing.returncode == 3 and "no evidence items start with" in missing.stderr
    assert cli.json("status")["queue"]["queued"] == 0


def test_restricted_facts_are_shown_only_on_request_and_the_viewing_is_logged(cli: Cli, tmp_path: Path,
                                                                            tiny_video: Path):
    tagged = tmp_path / "phone.mp4"
    ffmpeg("-i", str(tiny_video), "-c", "copy", "-metadata", "location=+43.3180+045.6981/",
           str(tagged))
    evidence_id = cli.json("ingest", tagged)["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    assert "43.3180" not in cli("show", evidence_id, "--json").stdout
    run_dir = Path(cli.json("show", evidence_id)["runs"][0]["location"])
    assert "43.3180" not in (run_dir / "run.json").read_text()
    shown = cli.json("show", evidence_id, "--restricted")
    assert shown["restricted"]["location"] == "+43.3180+045.6981/"
    assert custody_events(cli, evidence_id)[-1]["event"] == custody.RESTRICTED_VIEWED


def test_audit_detects_a_tampered_original_output_and_custody_log(cli: Cli, sample_item: dict):
    evidence_id = sample_item["id"]
    item = cli.home / "store" / evidence_id
    original = item / "original" / "original.mp4"
    original.chmod(0o644)
    with open(original, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00")
    run_dir = next((item / "runs").iterdir())
    (run_dir / "probe.json").chmod(0o644)
    (run_dir / "probe.json").write_text("{}")
    log = item / "custody.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:1] + lines[2:]))  # delete one event

    done = cli("audit", "--json", check=False)
    assert done.returncode == 1
    [result] = json.loads(done.stdout)["results"]
    problems = "\n".join(result["problems"])
    assert "fails its SHA-256 check" in problems
    assert "probe.json no longer matches" in problems
    assert "does not follow the event before it" in problems

    # A run on the damaged original stops at once, with the reason, and changes nothing.
    cli("reprocess", evidence_id, "--new-run")
    assert cli("worker", "--once", check=False).returncode == 1
    [dead] = cli.json("status")["dead_letters"]
    assert dead["attempts"] == 1 and "fails its SHA-256 check" in dead["reason"]


@pytest.mark.slow
def test_demo_runs_end_to_end(cli: Cli):
    report = cli.json("demo")
    assert report["runs"][0]["status"] == "committed"
    assert report["queue"]["done"] == 1


def test_config_show_prints_the_effective_settings(cli: Cli, tmp_path: Path):
    config = tmp_path / "evidence.toml"
    config.write_text("[queue]\nmax_attempts = 7\nvisibility_timeout_s = 60\n")
    shown = json.loads(cli("--config", config, "config", "show").stdout)
    assert shown["queue"]["max_attempts"] == 2, "environment overrides the file"
    assert shown["queue"]["visibility_timeout_s"] == 60
    assert shown["home"] == str(cli.home)
    config.write_text("[queue]\nmax_attemps = 7\n")
    bad = cli("--config", config, "config", "show", check=False)
    assert bad.returncode == 2 and "queue.max_attemps: unknown setting" in bad.stderr
    bad = cli("config", "show", check=False, EVIDENCE_QUEUE__VISIBILITY_TIMEOUT_S="-1")
    assert bad.returncode == 2 and "EVIDENCE_QUEUE__VISIBILITY_TIMEOUT_S" in bad.stderr


def test_help_teaches(cli: Cli):
    text = cli("--help").stdout
    for needle in ("evidence ingest", "evidence worker --once", "exit status", "EVIDENCE_HOME"):
        assert needle in text
    assert shutil.which("ffmpeg"), "set-up must have installed ffmpeg"


def test_custody_names_a_role_never_the_account_or_host(cli: Cli, tmp_path: Path):
    """Staff are anonymous: with no [operator] name configured, what custody (and every export) names is a role."""
    import getpass
    import socket

    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip))
    del cli.env["EVIDENCE_OPERATOR"]  # nothing configured: the default
    evidence_id = cli.json("ingest", clip)["ingested"][0]["evidence_id"]
    log = (cli.home / "store" / evidence_id / "custody.jsonl").read_text()
    assert '"actor": "operator (unnamed)"' in log.replace('":"', '": "')
    assert getpass.getuser() not in log and socket.gethostname() not in log
    other = cli.json("ingest", SAMPLE_VIDEO, EVIDENCE_OPERATOR__NAME="field team 2")["ingested"][0]["evidence_id"]
    assert "field team 2" in (cli.home / "store" / other / "custody.jsonl").read_text()
    done = cli("status", check=False, EVIDENCE_OPERATOR="archivist\u202e3")
    assert done.returncode != 0 and "U+202E" in done.stderr and "Traceback" not in done.stderr


def test_commands_onto_existing_paths_or_without_a_region_fail_in_one_line(cli: Cli, tmp_path: Path):
    cli("keys", "init-test-ca", "--out", tmp_path / "ca")
    cli("keys", "init-storage-key", "--out", tmp_path / "master.key")
    for args in (("keys", "init-test-ca", "--out", tmp_path / "ca"),
                 ("keys", "init-storage-key", "--out", tmp_path / "master.key")):
        done = cli(*args, check=False)
        assert done.returncode == 2 and "already exists; nothing was overwritten" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    cli.env.pop("AWS_DEFAULT_REGION", None)
    cli.env.pop("AWS_REGION", None)
    done = cli("admin", "init-s3", check=False, EVIDENCE_STORE__BACKEND="s3", EVIDENCE_STORE__BUCKET="evidence",
               AWS_CONFIG_FILE=str(tmp_path / "none"))
    assert done.returncode == 2 and "no AWS region" in done.stderr and "Traceback" not in done.stderr, done.stderr
