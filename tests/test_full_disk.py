"""A full disk is an outage, not a bad file (rule 9): on a real, small file system mounted for the test."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE_VIDEO, Cli

from worker import custody
from worker.local_store import LocalStore
from worker.space import DiskFull

PAGE = 4096


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


def test_a_killed_intake_is_completed_or_rolled_back_on_the_next_start(tmp_path: Path):
    store = LocalStore(tmp_path / "store")
    stored = store.put_original(io.BytesIO(b"footage"), intake={"original_name": "a.mp4", "case": "C-3"}, actor="t")
    item = store.root / stored.evidence_id
    # Killed after the original and its record, before the "ingested" event:
    (item / "custody.jsonl").unlink()
    # Killed after the record, before the original was linked in:
    orphan = store.root / ("e" * 64)
    orphan.mkdir(mode=0o700)
    (orphan / "evidence.json").write_text(json.dumps({"sha256": "e" * 64}))
    done = store.recover("next-worker")
    assert len(done) == 2
    [event] = store.custody(stored.evidence_id).events
    assert event["event"] == custody.INGESTED and event["details"]["case"] == "C-3" and "recovered" in event["details"]
    assert not (orphan / "evidence.json").exists() and "e" * 64 not in store.evidence_ids()
    assert store.recover("next-worker") == []


def test_a_full_disk_pauses_the_worker_without_counting_attempts(small_disk: Path):
    cli = Cli(small_disk / "home")
    cli.json("ingest", SAMPLE_VIDEO)
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
