"""Uploads as phones and careless operators make them: paused, still open, renamed, removed, swapped,
with names too long or ending in .error (rules 6 and 12)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import REPO, SAMPLE_VIDEO, Cli
from test_inbox import make_inbox, note, scan_until

from worker.errors import BadSource
from worker.fs import writers
from worker.intake.inbox import Inbox
from worker.intake.ingest import ingest, ingest_handle, open_source
from worker.record import custody

PAUSING_WRITER = """
import sys, time
data = open(sys.argv[1], 'rb').read()
with open(sys.argv[2], 'wb') as out:
    out.write(data[:70000]); out.flush()
    print('paused', flush=True)
    time.sleep(float(sys.argv[3]))      # the phone lost its signal; the file stays open
    out.write(data[70000:])
"""


def test_an_upload_paused_with_the_file_open_is_not_stored_until_it_is_complete(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0.3)
    target = inbox.folder / "interview.mp4"
    writer = subprocess.Popen([sys.executable, "-c", PAUSING_WRITER, str(SAMPLE_VIDEO), str(target), "2.5"],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "paused"
    deadline = time.monotonic() + 2.0  # far longer than stable_s, with the size unchanged all along
    while time.monotonic() < deadline:
        assert inbox.scan() == [], "an upload still open for writing was stored"
        time.sleep(0.1)
    assert store.evidence_ids() == [] and target.stat().st_size == 70000
    writer.wait(timeout=30)
    scan_until(inbox, lambda: not target.exists())
    full = hashlib.sha256(SAMPLE_VIDEO.read_bytes()).hexdigest()
    assert store.evidence_ids() == [full], "only the complete upload may be stored"
    assert (inbox.folder / ".ingested" / "interview.mp4").read_bytes() == SAMPLE_VIDEO.read_bytes()


def test_both_ways_of_seeing_a_writer_agree(tmp_path: Path):
    path = tmp_path / "upload.mp4"
    holds_open = "import sys,time\nf=open(sys.argv[1],'ab')\nprint('open',flush=True)\ntime.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", holds_open, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert writers._proc_says(fd) is True
            if os.geteuid() == 0 or os.stat(path).st_uid == os.geteuid():
                assert writers._lease_says(fd) is True
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert writers.open_for_writing(fd) is False
        assert writers._proc_says(fd) in (False, None)
    finally:
        os.close(fd)


def test_a_file_that_grows_right_after_it_was_stored_is_logged_incomplete_and_stored_again(
        tmp_path: Path, store, queue):
    data = SAMPLE_VIDEO.read_bytes()

    def ingest_then_writer_resumes(handle, name, shown):
        result = ingest_handle(store, queue, handle, source=shown, name=name, actor="t")
        with open(inbox.folder / name, "ab") as resumed:  # the uploader's next chunk lands just after the copy
            resumed.write(data[70000:])
        return result

    inbox = Inbox(tmp_path / "inbox", ingest_then_writer_resumes, store, stable_s=0, actor="t")
    target = inbox.folder / "clip.mp4"
    target.write_bytes(data[:70000])
    scan_until(inbox, lambda: len(store.evidence_ids()) == 1)
    [partial] = store.evidence_ids()
    assert partial == hashlib.sha256(data[:70000]).hexdigest()
    [event] = [e for e in store.custody(partial).events if e["event"] == custody.INCOMPLETE_UPLOAD]
    assert event["details"]["stored_size"] == 70000 and event["details"]["size_after_storing"] == len(data)
    assert target.exists(), "the still-growing file must stay in the inbox"
    inbox.ingest = lambda handle, name, shown: ingest_handle(store, queue, handle, source=shown, name=name, actor="t")
    scan_until(inbox, lambda: not target.exists())
    assert hashlib.sha256(data).hexdigest() in store.evidence_ids()


def test_uploads_named_like_notes_are_ingested_and_never_overwritten(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    (inbox.folder / "clip.mp4.error").write_bytes(b"a real video named like a note")
    (inbox.folder / "clip.mp4").mkdir()  # gets a note, which must not land on the upload above
    scan_until(inbox, lambda: not (inbox.folder / "clip.mp4.error").exists())
    assert (inbox.folder / ".ingested" / "clip.mp4.error").read_bytes() == b"a real video named like a note"
    assert "a directory" in note(inbox, "clip.mp4").read_text()
    assert len(store.evidence_ids()) == 1


def test_a_file_removed_from_the_inbox_during_its_copy_is_stored_without_a_false_note(tmp_path: Path, store, queue):
    def removed_mid_copy(handle, name, shown):
        os.unlink(inbox.folder / name)  # the descriptor still reads the whole file
        return ingest_handle(store, queue, handle, source=shown, name=name, actor="t")

    inbox = Inbox(tmp_path / "inbox", removed_mid_copy, store, stable_s=0, actor="t")
    (inbox.folder / "gone.mp4").write_bytes(b"recording that was removed")
    scan_until(inbox, lambda: store.evidence_ids() != [])
    assert not (inbox.folder / ".error").exists() or not list((inbox.folder / ".error").iterdir())
    assert store.evidence(store.evidence_ids()[0])["size"] == len(b"recording that was removed")


def test_names_too_long_for_a_suffix_still_move_and_get_notes(tmp_path: Path, store, queue):
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    longest = "интервью-" * 14 + "x" * (255 - len(("интервью-" * 14).encode()))  # 255 bytes, Cyrillic and Latin
    assert len(longest.encode()) == 255
    for content in (b"first", b"second"):  # the second needs the evidence id appended: it must still fit
        (inbox.folder / longest).write_bytes(content)
        scan_until(inbox, lambda: not (inbox.folder / longest).exists())
    moved = [p for p in (inbox.folder / ".ingested").iterdir() if not p.name.startswith(".")]
    assert sorted(p.read_bytes() for p in moved) == [b"first", b"second"]
    (inbox.folder / longest).mkdir()
    inbox.scan()
    [written] = list((inbox.folder / ".error").iterdir())
    assert len(os.fsencode(written.name)) <= 255 and "a directory" in written.read_text()
    assert longest[:40] in written.read_text()


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(tmp_path: Path, store, queue, cli: Cli):
    fifo = tmp_path / "swapped.mp4"
    os.mkfifo(fifo)
    result: list = []
    opener = threading.Thread(target=lambda: result.append(pytest.raises(BadSource, open_source, fifo)))
    opener.start()
    opener.join(timeout=5)
    assert not opener.is_alive(), "opening a FIFO blocked"
    assert "not a regular file" in str(result[0].value)
    with pytest.raises(BadSource):
        ingest(store, queue, fifo, actor="t")
    done = cli("ingest", fifo, check=False, timeout=30)
    assert done.returncode == 1 and "not a regular file" in done.stderr


SLOW_UPLOAD = """
import sys, time
data = open(sys.argv[1], 'rb').read()
with open(sys.argv[2], 'wb') as out:
    out.write(data[:20000]); out.flush()
    time.sleep(float(sys.argv[3]))
    out.write(data[20000:])
"""


def _as(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]


@pytest.mark.root
@pytest.mark.parametrize("pause_s, quiet_s", [(2.5, 5.0), (3.0, 1.0)])
def test_another_accounts_paused_upload_is_never_left_stored_truncated(pause_s: float, quiet_s: float):
    """The watcher, not root, cannot see another account's writer: it waits the quiet period, and a file
    taken too early is reported and stored again, complete, when it grows."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the watcher and the uploader as two other accounts")
    base = Path(tempfile.mkdtemp(prefix="evidence-accounts-", dir="/tmp"))
    try:
        base.chmod(0o755)
        home, inbox = base / "home", base / "inbox"
        home.mkdir(mode=0o700)
        os.chown(home, 65534, 65534)
        inbox.mkdir()
        inbox.chmod(0o777)
        cli = Cli(home)
        env = {**cli.env, "EVIDENCE_WORKER__INBOX_QUIET_S": str(quiet_s), "EVIDENCE_WORKER__POLL_INTERVAL_S": "0.2"}
        watcher = subprocess.Popen([*_as(65534), *cli.command("watch", inbox)], cwd=REPO, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            source = base / "sample.mp4"
            source.write_bytes(SAMPLE_VIDEO.read_bytes())
            source.chmod(0o644)
            subprocess.run([*_as(1000), sys.executable, "-c", SLOW_UPLOAD, str(source), str(inbox / "clip.mp4"),
                            str(pause_s)], check=True, timeout=60)
            full = hashlib.sha256(SAMPLE_VIDEO.read_bytes()).hexdigest()
            deadline = time.monotonic() + 40
            while not (home / "store" / full).exists():
                assert watcher.poll() is None, watcher.stderr.read()
                assert time.monotonic() < deadline, "the complete upload was never stored"
                time.sleep(0.2)
        finally:
            watcher.terminate()
            logs = watcher.communicate(timeout=30)[1]
        items = sorted(p.name for p in (home / "store").iterdir() if len(p.name) == 64)
        partial = hashlib.sha256(SAMPLE_VIDEO.read_bytes()[:20000]).hexdigest()
        if pause_s < quiet_s:
            assert items == [full], f"a paused upload was stored truncated:\n{logs}"
        else:  # taken during the pause, as the quiet period allows: reported, then stored again complete
            assert items == sorted([full, partial]), logs
            chain = (home / "store" / partial / "custody.jsonl").read_text()
            assert '"incomplete upload"' in chain and '"stored_size":20000' in chain
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_moved_upload_that_grows_is_caught_by_a_restarted_watcher(tmp_path: Path, store, queue):
    data = SAMPLE_VIDEO.read_bytes()
    first = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    (first.folder / "clip.mp4").write_bytes(data[:70000])
    scan_until(first, lambda: not (first.folder / "clip.mp4").exists())
    first.close()
    with open(tmp_path / "inbox" / ".ingested" / "clip.mp4", "ab") as writer:  # the writer was not done
        writer.write(data[70000:])
    restarted = make_inbox(tmp_path / "inbox", store, queue, stable_s=0)
    full = hashlib.sha256(data).hexdigest()
    scan_until(restarted, lambda: full in store.evidence_ids())
    partial = hashlib.sha256(data[:70000]).hexdigest()
    assert custody.INCOMPLETE_UPLOAD in [e["event"] for e in store.custody(partial).events]
    assert oct((tmp_path / "inbox" / ".ingested" / ".moved.json").stat().st_mode)[-3:] == "600"


@pytest.mark.root
def test_watch_once_takes_another_accounts_old_file_and_reports_what_it_leaves():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the watcher and the uploader as two other accounts")
    base = Path(tempfile.mkdtemp(prefix="evidence-old-", dir="/tmp"))
    bystander = subprocess.Popen([*_as(1000), "sleep", "60"])  # a process of the uploader's account
    try:
        base.chmod(0o755)
        home, inbox = base / "home", base / "inbox"
        home.mkdir(mode=0o700)
        os.chown(home, 65534, 65534)
        inbox.mkdir()
        inbox.chmod(0o777)
        old = inbox / "yesterday.mp4"
        old.write_bytes(SAMPLE_VIDEO.read_bytes())
        os.chown(old, 1000, 1000)
        os.utime(old, (time.time() - 86400, time.time() - 86400))
        fresh = inbox / "now.mp4"
        fresh.write_bytes(b"still arriving")
        os.chown(fresh, 1000, 1000)
        cli = Cli(home)
        done = subprocess.run([*_as(65534), *cli.command("watch", inbox, "--once")], cwd=REPO, env=cli.env,
                              capture_output=True, text=True, timeout=120)
        assert not old.exists() and (inbox / ".ingested" / "yesterday.mp4").exists(), done.stderr
        assert fresh.exists() and done.returncode == 1 and "may still be arriving" in done.stderr
    finally:
        bystander.kill()
        bystander.wait()
        shutil.rmtree(base, ignore_errors=True)
