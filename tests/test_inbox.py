"""The watched inbox: automatic intake on upload, never losing the inbox copy."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from support import SAMPLE_VIDEO, Cli

from worker.backends.local import LocalStore
from worker.backends.sqlite import SqliteQueue
from worker.config import Settings
from worker.intake.inbox import Inbox
from worker.intake.ingest import ingest_handle


def make_inbox(folder: Path, store: LocalStore, queue: SqliteQueue, stable_s: float = 0.3) -> Inbox:
    def ingest_one(handle, name, shown):
        return ingest_handle(store, queue, handle, source=shown, name=name, actor="inbox-test")

    return Inbox(folder, ingest_one, store, stable_s=stable_s, actor="inbox-test")


def note(inbox: Inbox, name: str) -> Path:
    return inbox.folder / ".error" / f"{name}.txt"


def scan_until(inbox: Inbox, condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "inbox never got there"
        inbox.scan()
        time.sleep(0.1)


def test_a_file_is_ingested_once_complete_and_moved_aside_only_after_it_is_stored(
        tmp_path: Path, store: LocalStore, queue: SqliteQueue):
    inbox = make_inbox(tmp_path / "inbox", store, queue)
    data = SAMPLE_VIDEO.read_bytes()
    target = inbox.folder / "interview.mp4"
    stop = threading.Event()

    def slow_upload() -> None:  # a camera copying a file over a slow link
        with open(target, "wb") as handle:
            for offset in range(0, len(data), 64 * 1024):
                handle.write(data[offset: offset + 64 * 1024])
                handle.flush()
                time.sleep(0.02)
        stop.set()

    writer = threading.Thread(target=slow_upload)
    writer.start()
    while not stop.is_set():
        assert inbox.scan() == [], "a file still being written was ingested"
        time.sleep(0.05)
    writer.join()
    assert store.evidence_ids() == []
    scan_until(inbox, lambda: not target.exists())

    evidence_id = hashlib.sha256(data).hexdigest()
    assert store.evidence_ids() == [evidence_id]
    store.verify_original(evidence_id)
    assert (inbox.folder / ".ingested" / "interview.mp4").read_bytes() == data
    assert [job.evidence_id for job in queue.jobs()] == [evidence_id]


def test_a_file_that_cannot_be_stored_stays_in_the_inbox_with_a_note(tmp_path: Path, queue: SqliteQueue):
    broken_root = tmp_path / "store-on-a-dead-disk"
    store = LocalStore(broken_root)
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    target = inbox.folder / "evidence.mp4"
    target.write_bytes(SAMPLE_VIDEO.read_bytes())
    (broken_root / ".incoming").rmdir()
    (broken_root / ".incoming").write_text("not a directory")  # every upload now fails mid-way
    inbox.scan()
    inbox.scan()
    assert target.read_bytes() == SAMPLE_VIDEO.read_bytes(), "the inbox copy must survive a failed store"
    assert "was not ingested" in note(inbox, "evidence.mp4").read_text()
    assert not list((inbox.folder / ".ingested").iterdir())
    # Unchanged file: not retried on every scan. Replaced file: tried again.
    (broken_root / ".incoming").unlink()
    (broken_root / ".incoming").mkdir()
    inbox.scan()
    assert target.exists()
    os.utime(target)
    scan_until(inbox, lambda: not target.exists())
    assert len(store.evidence_ids()) == 1


def test_directories_and_links_get_a_note_and_are_never_followed(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    (inbox.folder / "a folder").mkdir()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(SAMPLE_VIDEO.read_bytes())
    (inbox.folder / "link.mp4").symlink_to(secret)
    for _ in range(3):
        inbox.scan()
    assert "a directory" in note(inbox, "a folder").read_text()
    assert "not a regular file" in note(inbox, "link.mp4").read_text()
    assert store.evidence_ids() == []
    assert (inbox.folder / "link.mp4").is_symlink() and (inbox.folder / "a folder").is_dir()


def test_same_name_uploaded_twice_keeps_both_inbox_copies(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    for content in (b"first recording", b"second recording"):
        (inbox.folder / "clip.mp4").write_bytes(content)
        scan_until(inbox, lambda: not (inbox.folder / "clip.mp4").exists())
    kept = sorted(p.read_bytes() for p in (inbox.folder / ".ingested").iterdir() if not p.name.startswith("."))
    assert kept == [b"first recording", b"second recording"]
    assert len(store.evidence_ids()) == 2


@pytest.mark.timeout(120)
def test_worker_with_inbox_processes_uploads_automatically(cli: Cli, tmp_path: Path, tiny_video: Path):
    inbox = tmp_path / "inbox"
    worker = cli.popen("worker", "--inbox", inbox, "--case", "C-9", "--languages", "ru")
    try:
        deadline = time.monotonic() + 30
        while not inbox.is_dir():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        (inbox / "upload.mp4").write_bytes(tiny_video.read_bytes())
        deadline = time.monotonic() + 90
        while cli.json("status")["queue"]["done"] < 1:
            assert worker.poll() is None, worker.stderr.read()
            assert time.monotonic() < deadline, "upload was not processed"
            time.sleep(0.3)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    evidence_id = hashlib.sha256(tiny_video.read_bytes()).hexdigest()
    shown = cli.json("show", evidence_id)
    assert shown["original"]["case"] == "C-9" and shown["original"]["languages"] == ["ru"]
    assert shown["runs"][0]["status"] == "committed"
    assert (inbox / ".ingested" / "upload.mp4").exists()


def test_watch_once_ingests_what_is_there(cli: Cli, tmp_path: Path, settings: Settings):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.mp4").write_bytes(SAMPLE_VIDEO.read_bytes())
    cli("watch", inbox, "--once")
    assert cli.json("status")["queue"]["queued"] == 1
    assert not (inbox / "a.mp4").exists() and (inbox / ".ingested" / "a.mp4").exists()


def test_a_link_planted_at_the_note_name_is_replaced_not_followed(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    victim = tmp_path / "custody.jsonl"
    victim.write_text("precious\n")
    (inbox.folder / "x.mp4").symlink_to(tmp_path / "anything")
    (inbox.folder / ".error").mkdir()
    note(inbox, "x.mp4").symlink_to(victim)
    inbox.scan()
    assert victim.read_text() == "precious\n"
    assert not note(inbox, "x.mp4").is_symlink()
    assert "not a regular file" in note(inbox, "x.mp4").read_text()


def test_one_bad_entry_does_not_stop_the_others(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    (inbox.folder / "a").mkdir()
    (inbox.folder / ".error").mkdir()
    note(inbox, "a").mkdir()  # the note for "a" cannot be written
    (inbox.folder / "b.mp4").write_bytes(b"recording b")
    scan_until(inbox, lambda: not (inbox.folder / "b.mp4").exists())
    assert len(store.evidence_ids()) == 1


def test_a_stored_file_that_cannot_be_moved_is_not_stored_again_and_again(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    data = b"recording c"
    short = hashlib.sha256(data).hexdigest()[:12]
    done = inbox.folder / ".ingested"
    done.mkdir()
    for taken in ["c.mp4", f"c.mp4.{short}", *[f"c.mp4.{short}.{n}" for n in range(1, 1000)]]:
        (done / taken).write_bytes(b"an earlier arrival")  # every name the move could take is taken
    (inbox.folder / "c.mp4").write_bytes(data)
    for _ in range(4):
        inbox.scan()
    [evidence_id] = store.evidence_ids()
    assert [e["event"] for e in store.custody(evidence_id).events] == ["ingested", "job enqueued"]
    text = note(inbox, "c.mp4").read_text()
    assert f"stored as evidence {evidence_id}" in text and (inbox.folder / "c.mp4").exists()
