"""A full disk is an outage, not a bad file (rule 9): on a real, small file system mounted for the test."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO, SAMPLE_VIDEO, Cli, ffmpeg

from worker.backends.local import LocalStore
from worker.errors import CustodyError
from worker.fs.space import DiskFull
from worker.record import custody

PAGE = 4096
DIE_MID_APPEND = REPO / "tests" / "helpers" / "die_mid_append.py"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) to mount a small tmpfs that can fill up")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Take all free space on ``disk`` but ``leave_bytes`` (rounded to pages)."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as handle:
        remaining = max(free - leave_bytes, 0)
        while remaining:
            chunk = min(remaining, 2**20)
            handle.write(b"\0" * chunk)
            remaining -= chunk
    return filler


@pytest.mark.root
def test_an_intake_the_disk_cannot_finish_leaves_nothing_half_stored(small_disk: Path):
    store = LocalStore(small_disk / "store", min_free_bytes=0)
    data = os.urandom(40 * PAGE)
    fill(small_disk, leave_bytes=40 * PAGE)  # room for the copy of the upload, and not one page more
    with pytest.raises(DiskFull, match="filled up while storing the original"):
        store.put_original(io.BytesIO(data), intake={"original_name": "a.mp4"}, actor="t", size_hint=len(data))
    assert store.evidence_ids() == [], "an original without its record, or a record without its original"
    for item in (small_disk / "store").iterdir():
        assert not (item / "original").exists() and not (item / "evidence.json").exists()
    (small_disk / "filler").unlink()
    stored = store.put_original(io.BytesIO(data), intake={"original_name": "a.mp4"}, actor="t")
    assert store.evidence(stored.evidence_id)["size"] == len(data)
    assert [e["event"] for e in store.custody(stored.evidence_id).events] == [custody.INGESTED]
    assert store.custody(stored.evidence_id).ok


def test_an_intake_killed_mid_write_is_completed_on_the_next_start(tmp_path: Path):
    source = tmp_path / "upload.mp4"
    source.write_bytes(SAMPLE_VIDEO.read_bytes())
    died = subprocess.run([sys.executable, str(DIE_MID_APPEND), str(tmp_path / "store"), "--ingest", str(source)],
                          capture_output=True, text=True)
    assert died.returncode == -9, died.stderr
    store = LocalStore(tmp_path / "store")
    [evidence_id] = store.evidence_ids()
    assert not store.custody(evidence_id).ok, "the test is void: the 'ingested' event was not cut"
    done = store.recover("next-worker")
    assert done == [f"{evidence_id}: completed an intake that stopped before it was logged"]
    chain = store.custody(evidence_id)
    assert chain.ok, chain.problems
    assert [e["event"] for e in chain.events] == [custody.CUSTODY_REPAIRED, custody.INGESTED]
    assert chain.events[1]["details"]["case"] == "C-9" and "recovered" in chain.events[1]["details"]
    assert store.recover("next-worker") == []
    store.verify_original(evidence_id)


def test_a_record_without_its_original_is_rolled_back_only_when_an_intake_marker_explains_it(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    killed, planted = store.root / ("e" * 64), store.root / ("d" * 64)
    for item in (killed, planted):
        item.mkdir(mode=0o700)
        (item / "evidence.json").write_text(json.dumps({"sha256": item.name}))
    (killed / "intake.pending").write_text("{}")  # what an intake writes first
    assert store.recover("next-worker") == [f"{'e' * 64}: rolled back an intake that stopped before its original "
                                            "was stored"]
    assert not (killed / "evidence.json").exists() and (planted / "evidence.json").exists()


def test_a_deleted_custody_log_is_never_rebuilt(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    stored = store.put_original(io.BytesIO(b"footage"), intake={"original_name": "a.mp4"}, actor="t")
    (store.root / stored.evidence_id / "custody.jsonl").unlink()
    assert store.recover("next-worker") == []
    for recover in (True, False):
        with pytest.raises(CustodyError, match="missing or empty"):
            store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "t", {}, recover=recover)
    with pytest.raises(CustodyError, match="missing or empty"):
        store.put_original(io.BytesIO(b"footage"), intake={"original_name": "again.mp4"}, actor="t")
    assert not (store.root / stored.evidence_id / "custody.jsonl").exists()
    store.acknowledge_custody_damage(stored.evidence_id, "archivist", "deleted by the intruder on 3 May")
    chain = store.custody(stored.evidence_id)
    assert chain.ok and "deleted by the intruder" in chain.repairs[0]
    store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "t", {})


@pytest.mark.root
def test_a_full_disk_pauses_the_worker_without_counting_attempts(small_disk: Path, tmp_path: Path):
    recording = tmp_path / "short.mp4"   # four seconds at a high bit rate: small to process, too big to copy
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=4", "-c:v", "libx264", "-b:v", "4M", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-shortest", str(recording))
    assert recording.stat().st_size > 512 * 1024
    cli = Cli(small_disk / "home")
    cli.json("ingest", recording)
    fill(small_disk, leave_bytes=256 * 1024)  # SQLite can still write; the work copy of the original cannot
    stopped = cli("worker", "--once", check=False)
    assert stopped.returncode == 1, stopped.stderr
    assert "the disk is full" in stopped.stderr and "Traceback" not in stopped.stderr
    status = cli.json("status")
    assert status["queue"]["queued"] == 1 and status["queue"]["dead"] == 0
    [job] = [j for j in status["dead_letters"]] or [None]
    assert job is None
    fill(small_disk, leave_bytes=0)  # now nothing at all: readers still answer, writers say why in one line
    assert cli.json("status")["queue"]["queued"] == 1
    refused = cli("reprocess", next(p.name for p in (cli.home / "store").iterdir() if len(p.name) == 64),
                  "--new-run", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    (small_disk / "filler").unlink()
    cli("worker", "--once")
    status = cli.json("status")
    assert status["queue"]["done"] >= 1 and status["queue"]["dead"] == 0
    shown = cli.json("show", next(p.name for p in (cli.home / "store").iterdir() if len(p.name) == 64))
    assert any(run["status"] == "committed" for run in shown["runs"])
    assert cli.json("audit")["ok"]


def test_the_free_space_message_says_what_is_needed(tmp_path: Path):
    store = LocalStore(tmp_path / "store", min_free_bytes=0)
    with pytest.raises(DiskFull) as refused:
        store.put_original(io.BytesIO(b"x"), intake={}, actor="t", size_hint=2**62)
    message = str(refused.value)
    assert "bytes are free" in message and f"{2**62:,} are needed" in message
    assert "at least 0" not in message and "min_free_bytes" not in message


@pytest.mark.root
def test_a_run_that_fills_the_disk_by_itself_is_a_bad_file_not_an_outage(small_disk: Path, tmp_path: Path):
    """Ten minutes of sound in half a megabyte: its transcription's audio (32 kB a second) fills the 16 MB disk
    by itself. Pausing and retrying would fill it again for every other job: it is dead-lettered, once."""
    source = tmp_path / "quiet.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=a=0.001:r=16000:d=600", "-ac", "1",
                    "-c:a", "libopus", "-b:a", "6k", str(source)], check=True)
    assert source.stat().st_size < 600_000
    cli = Cli(small_disk / "home")
    [item] = cli.json("ingest", source)["ingested"]
    stopped = cli("worker", "--once", check=False, timeout=300)
    assert "Traceback" not in stopped.stderr, stopped.stderr
    status = cli.json("status")
    assert status["queue"]["queued"] == 0 and status["queue"]["dead"] == 1, status["queue"]
    [dead] = status["dead_letters"]
    assert "filled the disk by itself" in dead["reason"] and dead["attempts"] == 1, dead
    assert list((small_disk / "home" / "work").iterdir()) == []   # its partial output is gone: the disk has room
    assert cli.json("audit")["ok"]                                 # and the original is stored, intact
