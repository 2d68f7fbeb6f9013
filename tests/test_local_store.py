"""LocalStore on a real filesystem: write-once originals, verified reads, committed runs."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.backends.local import LocalStore
from worker.errors import CustodyError, IntegrityError
from worker.fs.space import DiskFull
from worker.record import custody


def hash_file(path: Path) -> tuple[str, int]:
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)

INTAKE = {"original_name": "interview.mp4", "case": "C-1"}


def put_bytes(store: LocalStore, data: bytes, **intake):
    return store.put_original(io.BytesIO(data), intake={**INTAKE, **intake}, actor="tester")


def events(store: LocalStore, evidence_id: str) -> list[str]:
    return [e["event"] for e in store.custody(evidence_id).events]


def test_original_is_stored_read_only_under_its_sha256(store: LocalStore):
    stored = put_bytes(store, b"footage bytes")
    path = Path(stored.location)
    assert stored.evidence_id == hash_file(path)[0]
    assert path.read_bytes() == b"footage bytes"
    assert path.name == "original.mp4"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o500
    record = store.evidence(stored.evidence_id)
    assert (record["sha256"], record["size"], record["case"]) == (stored.evidence_id, 13, "C-1")
    assert events(store, stored.evidence_id) == [custody.INGESTED]
    assert not list((store.root / ".incoming").iterdir()), "temporary upload left behind"


def test_same_bytes_again_keep_one_copy_and_log_a_duplicate_upload(store: LocalStore):
    first = put_bytes(store, b"same bytes")
    again = put_bytes(store, b"same bytes", original_name="copy.mov", case="C-2")
    assert again.evidence_id == first.evidence_id and again.duplicate and not first.duplicate
    assert len(list(Path(first.location).parent.iterdir())) == 1
    assert store.evidence(first.evidence_id)["original_name"] == "interview.mp4"
    chain = store.custody(first.evidence_id)
    assert [e["event"] for e in chain.events] == [custody.INGESTED, custody.DUPLICATE_UPLOAD]
    assert chain.events[1]["details"]["original_name"] == "copy.mov"
    assert chain.ok


def test_different_bytes_can_never_replace_an_original(store: LocalStore, tmp_path: Path):
    stored = put_bytes(store, b"the real original")
    impostor = store.root / ".incoming" / "upload-impostor"
    impostor.write_bytes(b"forged bytes of the same length!")
    # Even handed the victim's id directly, installation must not replace the stored bytes.
    with store._incoming() as incoming:
        store._install_original(incoming, impostor.name, stored.evidence_id, len(b"the real original"), INTAKE,
                                "attacker")
        assert Path(stored.location).read_bytes() == b"the real original"
        with pytest.raises(IntegrityError):
            store._install_original(incoming, impostor.name, stored.evidence_id, 999, INTAKE, "attacker")
    assert Path(stored.location).read_bytes() == b"the real original"
    other = put_bytes(store, b"different bytes")
    assert other.evidence_id != stored.evidence_id
    store.verify_original(stored.evidence_id)


def _put_from_process(root: str, source: str, barrier, results) -> None:
    store = LocalStore(Path(root))
    barrier.wait()
    with open(source, "rb") as handle:
        stored = store.put_original(handle, intake=dict(INTAKE), actor=f"process-{os.getpid()}")
    results.put((stored.evidence_id, stored.duplicate))


def test_two_processes_storing_the_same_file_at_once_yield_one_copy(store: LocalStore, tmp_path: Path):
    source = tmp_path / "big.mp4"
    source.write_bytes(os.urandom(48 * 2**20))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_put_from_process, args=(str(store.root), str(source), barrier, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    evidence_id = hash_file(source)[0]
    assert outcomes == [(evidence_id, False), (evidence_id, True)]
    assert len(list((store.root / evidence_id / "original").iterdir())) == 1
    assert events(store, evidence_id) == [custody.INGESTED, custody.DUPLICATE_UPLOAD]
    assert store.custody(evidence_id).ok
    assert not list((store.root / ".incoming").iterdir())


def test_an_original_altered_on_disk_is_detected_on_read(store: LocalStore, tmp_path: Path):
    stored = put_bytes(store, b"A" * 1000)
    path = Path(stored.location)
    path.chmod(0o644)
    with open(path, "r+b") as handle:  # same size, one byte changed: only the hash can tell
        handle.seek(500)
        handle.write(b"B")
    with pytest.raises(IntegrityError, match="fails its SHA-256 check"):
        store.fetch_original(stored.evidence_id, tmp_path / "copy")
    assert not (tmp_path / "copy").exists(), "a copy that failed verification must not be left behind"
    with pytest.raises(IntegrityError):
        store.verify_original(stored.evidence_id)


def test_hostile_names_are_kept_as_data_and_never_used_as_paths(store: LocalStore, tmp_path: Path):
    name = "../../../etc/cron.d/x\n-i Видео допроса.mp4"
    stored = put_bytes(store, b"video", original_name=name)
    assert Path(stored.location) == store.root / stored.evidence_id / "original" / "original.mp4"
    assert store.evidence(stored.evidence_id)["original_name"] == name
    weird = put_bytes(store, b"other", original_name="no extension..\x00")
    assert Path(weird.location).name == "original.bin"
    assert sorted(p.name for p in store.root.iterdir()) == sorted(
        [".incoming", ".in-use", stored.evidence_id, weird.evidence_id])


def test_an_upload_that_would_fill_the_disk_is_refused_before_copying(tmp_path: Path):
    store = LocalStore(tmp_path / "store", min_free_bytes=2**62)
    with pytest.raises(DiskFull, match="store.min_free_bytes"):
        store.put_original(io.BytesIO(b"x"), intake=INTAKE, actor="t", size_hint=1)
    assert store.evidence_ids() == []


def test_committed_runs_are_never_overwritten(store: LocalStore, tmp_path: Path):
    stored = put_bytes(store, b"video")
    out = tmp_path / "out.json"
    out.write_text("first")
    committed = store.commit_run(stored.evidence_id, "intake-v1-aaaa", {"out.json": out},
                                 {"run_id": "intake-v1-aaaa"})
    assert committed.record["outputs"]["out.json"]["sha256"] == hash_file(out)[0]
    assert committed.sha256 == hash_file(store.root / stored.evidence_id / "runs" / "intake-v1-aaaa" / "run.json")[0]
    out.write_text("second")
    assert store.commit_run(stored.evidence_id, "intake-v1-aaaa", {"out.json": out}, {"run_id": "x"}) is None
    assert store.read_output(stored.evidence_id, "intake-v1-aaaa", "out.json") == b"first"
    with pytest.raises(ValueError):
        store.commit_run(stored.evidence_id, "intake-v1-bbbb", {"../escape": out}, {})
    assert [r.record["run_id"] for r in store.run_records(stored.evidence_id)] == ["intake-v1-aaaa"]


def test_a_crashed_commit_never_looks_committed_and_is_cleared_by_the_next_attempt(store: LocalStore, tmp_path):
    stored = put_bytes(store, b"video")
    # What a worker killed half-way through commit_run leaves: a staging folder, even with run.json.
    leftover = store.root / stored.evidence_id / "runs" / ".staging-intake-v1-cccc-0123456789ab"
    leftover.mkdir(parents=True)
    (leftover / "run.json").write_text("{}")
    assert not store.is_committed(stored.evidence_id, "intake-v1-cccc")
    assert store.run_records(stored.evidence_id) == []
    assert store.uncommitted_leftovers(stored.evidence_id) == [str(leftover)]
    store.discard_uncommitted(stored.evidence_id, "intake-v1-cccc")
    assert store.uncommitted_leftovers(stored.evidence_id) == []


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "insert", "torn"])
def test_custody_chain_detects_tampering(store: LocalStore, tamper: str):
    stored = put_bytes(store, b"video")
    for n in range(3):
        store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "tester", {"n": n})
    path = store.root / stored.evidence_id / "custody.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    assert store.custody(stored.evidence_id).ok and len(lines) == 4
    if tamper == "edit":
        lines[1] = lines[1].replace(b'"n":0', b'"n":7')
    elif tamper == "delete":
        del lines[2]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "insert":
        lines.insert(2, lines[1])
    else:
        lines[-1] = lines[-1][:-20]
    path.write_bytes(b"".join(lines))
    report = store.custody(stored.evidence_id)
    assert not report.ok, tamper
    # Nothing may be chained onto a last event that was altered (earlier damage stays visible anyway).
    if tamper == "edit":
        lines[-1] = lines[-1].replace(b'"n":2', b'"n":9')
        path.write_bytes(b"".join(lines))
        with pytest.raises(CustodyError):
            store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "tester", {})


def test_a_torn_last_event_nothing_explains_stops_appends_until_a_person_acknowledges_it(store: LocalStore):
    stored = put_bytes(store, b"video")
    store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "tester", {"n": 1})
    path = store.root / stored.evidence_id / "custody.jsonl"
    torn = path.read_bytes()[:-25]  # cut by someone: no interrupted write of ours explains it
    path.write_bytes(torn)
    for recover in (True, False):
        with pytest.raises(CustodyError, match="acknowledge"):
            store.append_custody(stored.evidence_id, custody.RUN_STARTED, "tester", {"run_id": "r"}, recover=recover)
    assert path.read_bytes() == torn and not store.custody(stored.evidence_id).ok
    store.acknowledge_custody_damage(stored.evidence_id, "archivist", "cut by a disk fault; event 2 was an audit")
    assert path.read_bytes().startswith(torn + b"\n"), "the damaged bytes must stay for inspection"
    store.append_custody(stored.evidence_id, custody.RUN_STARTED, "tester", {"run_id": "r"})
    report = store.custody(stored.evidence_id)
    assert report.ok, report.problems
    assert [e["event"] for e in report.events] == [custody.INGESTED, custody.CUSTODY_ACKNOWLEDGED, custody.RUN_STARTED]
    assert "archivist acknowledged it" in report.repairs[0] and "disk fault" in report.repairs[0]
    # A forged acknowledgement of an edited event does not pass.
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:-3] + b"xyz"
    path.write_bytes(b"\n".join(lines))
    assert not store.custody(stored.evidence_id).ok


def hold_lock_in_another_process(path: Path) -> subprocess.Popen:
    """A live owner: another process holding the lock on ``path`` until it is killed."""
    code = ("import fcntl, sys, time\nh = open(sys.argv[1], 'a+b')\nfcntl.flock(h, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\ntime.sleep(600)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout.readline().strip() == "locked"
    return owner


def test_a_staging_folder_is_discarded_only_when_its_owner_is_gone(store: LocalStore):
    stored = put_bytes(store, b"video")
    runs = store.root / stored.evidence_id / "runs"
    staging = runs / ".staging-intake-v1-dddd-0123456789ab"
    staging.mkdir(parents=True)
    owner = hold_lock_in_another_process(staging.with_name(staging.name + ".lock"))
    try:
        store.discard_uncommitted(stored.evidence_id, "intake-v1-dddd")
        assert staging.is_dir(), "a live worker's commit in progress was deleted"
    finally:
        owner.kill()
        owner.wait()
    store.discard_uncommitted(stored.evidence_id, "intake-v1-dddd")
    assert not staging.exists() and not list(runs.iterdir())


def test_partial_uploads_of_dead_processes_are_removed(store: LocalStore):
    incoming = store.root / ".incoming"
    dead, alive, fresh = incoming / "upload-dead", incoming / "upload-alive", incoming / "upload-fresh"
    for path in (dead, alive, fresh):
        path.write_bytes(b"unredacted bytes")
    for path in (dead, alive):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    owner = hold_lock_in_another_process(alive)
    try:
        assert store.remove_abandoned_uploads() == [str(dead)]
    finally:
        owner.kill()
        owner.wait()
    assert sorted(p.name for p in incoming.iterdir()) == ["upload-alive", "upload-fresh"]


def test_storing_again_after_an_original_was_deleted_changes_nothing(store: LocalStore):
    stored = put_bytes(store, b"deleted later")
    original = Path(stored.location)
    original.parent.chmod(0o700)
    original.unlink()
    with pytest.raises(IntegrityError, match="its original is gone"):
        put_bytes(store, b"deleted later")
    assert (store.root / stored.evidence_id / "evidence.json").exists(), "the record of the item must stay"
    assert stored.evidence_id in store.evidence_ids()
    with pytest.raises(Exception, match="no original"):
        store.verify_original(stored.evidence_id)


def test_an_item_reduced_to_its_custody_log_is_still_listed_for_the_audit(store: LocalStore):
    stored = put_bytes(store, b"gutted")
    item = store.root / stored.evidence_id
    (item / "original").chmod(0o700)
    for path in (item / "original").iterdir():
        path.unlink()
    (item / "original").rmdir()
    (item / "evidence.json").unlink()
    assert stored.evidence_id in store.evidence_ids()


def test_a_run_reads_the_stored_original_itself_after_it_is_re_verified(store, tmp_path):
    stored = store.put_original(io.BytesIO(b"footage" * 1000), intake={"original_name": "a.mp4"}, actor="t")
    work = tmp_path / "work"
    work.mkdir()
    path = store.original_for_run(stored.evidence_id, work)
    kept = store.root / stored.evidence_id / "original" / "original.mp4"
    assert path.samefile(kept) and list(work.iterdir()) == []   # no second copy
    kept.chmod(0o600)
    kept.write_bytes(b"altered" * 1000)
    with pytest.raises(IntegrityError, match="fails its SHA-256 check"):
        store.original_for_run(stored.evidence_id, work)
