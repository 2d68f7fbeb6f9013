"""Every kind of bad input: a clear error, a dead letter with the reason, the original kept."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from support import SAMPLE_VIDEO, Cli, ffmpeg


def make_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the dead letter's reason must contain)."""
    folder.mkdir()
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, data: bytes, reason: str) -> None:
        path = folder / name
        path.write_bytes(data)
        files[name] = (path, reason)

    add("statement.mp4", b"This is a witness statement typed in a text editor.\n", "a text file")
    data = SAMPLE_VIDEO.read_bytes()
    add("truncated.mp4", data[: len(data) // 2], "moov atom not found")
    add("empty.mp4", b"", "empty (0 bytes)")
    add("passwd-playlist.mp4", b"#EXTM3U\n#EXTINF:10,\n/etc/passwd\n#EXT-X-ENDLIST\n", "HLS/M3U playlist")
    add("url-playlist.mp4", b"#EXTM3U\n#EXTINF:10,\nhttp://203.0.113.9/x.ts\n#EXT-X-ENDLIST\n", "HLS/M3U playlist")
    add("concat.mp4", b"ffconcat version 1.0\nfile '/etc/shadow'\n", "concat script")
    tiny = folder / "tiny.mkv"
    ffmpeg("-f", "lavfi", "-i", "nullsrc=s=16x16:d=1", "-vf", "scale=1:1", "-c:v", "ffv1", str(tiny))
    files["tiny.mkv"] = (tiny, "1x1 pixels")
    return files


def test_bad_files_are_stored_dead_lettered_with_reasons_and_still_audit_clean(cli: Cli, tmp_path: Path):
    files = make_bad_files(tmp_path / "bad")
    report = cli.json("ingest", *[path for path, _ in files.values()])
    assert report["failed"] == []
    ids = {Path(item["source"]).name: item["evidence_id"] for item in report["ingested"]}
    done = cli("worker", "--once", check=False)
    assert done.returncode == 1 and "jobs were dead-lettered" in done.stderr   # a script can tell

    status = cli.json("status")
    assert status["queue"]["dead"] == len(files) and status["queue"]["queued"] == 0
    reasons = {job["evidence_id"]: job["reason"] for job in status["dead_letters"]}
    for name, (path, expected) in files.items():
        evidence_id = ids[name]
        assert expected in reasons[evidence_id], f"{name}: {reasons[evidence_id]}"
        # Permanent problems are not retried.
        assert next(j for j in status["dead_letters"] if j["evidence_id"] == evidence_id)["attempts"] == 1
        stored = cli.home / "store" / evidence_id / "original"
        [original] = stored.iterdir()
        assert original.read_bytes() == path.read_bytes()
        assert hashlib.sha256(original.read_bytes()).hexdigest() == evidence_id
        shown = cli.json("show", evidence_id)
        assert shown["runs"][0]["status"] == "failed" and expected in shown["runs"][0]["error"]
    assert cli.json("audit")["ok"], "a rejected file is still safely stored evidence"


def test_a_directory_or_missing_path_is_refused_and_the_rest_is_stored(cli: Cli, tmp_path: Path):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    done = cli("ingest", folder, tmp_path / "missing.mp4", SAMPLE_VIDEO, "--json", check=False)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    errors = {Path(item["source"]).name: item["error"] for item in report["failed"]}
    assert "is a directory" in errors["folder.mp4"] and "does not exist" in errors["missing.mp4"]
    assert [Path(item["source"]).name for item in report["ingested"]] == [SAMPLE_VIDEO.name]


def test_a_hostile_file_name_is_stored_safely_and_processed(cli: Cli, tmp_path: Path, tiny_video: Path):
    name = "-i ..\nДопрос свидетеля; rm -rf ~.mp4"
    hostile = tmp_path / name
    hostile.write_bytes(tiny_video.read_bytes())
    claimed = "../../../etc/cron.d/evidence\nx.mp4"
    first = cli.json("ingest", hostile)["ingested"][0]
    cli("worker", "--once")
    shown = cli.json("show", first["evidence_id"])
    assert shown["original"]["name"] == name
    assert shown["original"]["stored_as"] == "original/original.mp4"
    assert shown["runs"][0]["status"] == "committed"
    renamed = tmp_path / "other.bin"
    renamed.write_bytes(b"\x00" * 100)
    second = cli.json("ingest", renamed, "--name", claimed, "--no-enqueue")["ingested"][0]
    assert cli.json("show", second["evidence_id"])["original"]["name"] == claimed
    undecodable = tmp_path / os.fsdecode(b"\xff\xfe clip.mp4")
    undecodable.write_bytes(b"\x01" * 100)
    third = cli.json("ingest", undecodable, "--no-enqueue")["ingested"][0]
    record = json.loads((cli.home / "store" / third["evidence_id"] / "evidence.json").read_text())
    assert bytes.fromhex(record["original_name_bytes_hex"]) == b"\xff\xfe clip.mp4"
    assert sorted(p.name for p in (cli.home / "store").iterdir()) == sorted(
        [".incoming", ".in-use", first["evidence_id"], second["evidence_id"], third["evidence_id"]])


def test_a_hung_media_tool_is_retried_then_dead_lettered(cli: Cli, tiny_video: Path):
    evidence_id = cli.json("ingest", tiny_video)["ingested"][0]["evidence_id"]
    assert cli("worker", "--once", check=False, EVIDENCE_MEDIA__TIMEOUT_S="0.001").returncode == 1
    [dead] = cli.json("status")["dead_letters"]
    assert dead["evidence_id"] == evidence_id
    assert dead["attempts"] == 2 and "ran longer than" in dead["reason"]
    retried = cli("dead-letters", "--retry", dead["job_id"])
    assert "queued again" in retried.stdout
    cli("worker", "--once")
    assert cli.json("status")["queue"] == {"queued": 0, "delayed": 0, "leased": 0, "done": 1, "dead": 0}


def test_every_dead_letter_can_be_retried_at_once_after_the_cause_is_fixed(cli: Cli, tmp_path: Path,
                                                                          tiny_video: Path):
    other = tmp_path / "other.mp4"
    ffmpeg("-i", str(tiny_video), "-t", "0.5", "-c", "copy", str(other))
    cli.json("ingest", tiny_video, other)
    assert cli("worker", "--once", check=False, EVIDENCE_MEDIA__TIMEOUT_S="0.001").returncode == 1  # too tight
    assert cli.json("status")["queue"]["dead"] == 2
    retried = cli.json("dead-letters", "--retry-all")["retried"]
    assert len(retried) == 2 and all(job["state"] == "queued" and job["attempts"] == 0 for job in retried)
    cli("worker", "--once")
    assert cli.json("status")["queue"] == {"queued": 0, "delayed": 0, "leased": 0, "done": 2, "dead": 0}
    assert cli("dead-letters").stdout.strip() == "no dead letters"
