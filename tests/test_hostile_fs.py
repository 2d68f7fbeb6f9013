"""Links planted where the worker keeps its folders, and other local accounts (rules 1 and 4)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import Cli, ffmpeg
from test_inbox import make_inbox

from worker.backends.local import LocalStore
from worker.fs.directory import LinkRefused
from worker.fs.workdirs import private_workdir

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SETUID) to act as a second local account through setpriv")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to act as a second local account")


# -- rule 1: no link is followed -------------------------------------------------------------------


@pytest.mark.parametrize("special", [".ingested", ".error"])
def test_a_link_planted_as_an_inbox_folder_before_start_is_refused(tmp_path: Path, store, queue, special, caplog):
    victim = tmp_path / "etc-profile.d"
    victim.mkdir()
    inbox_dir = tmp_path / "inbox"
    inbox_dir.mkdir()
    (inbox_dir / special).symlink_to(victim)
    inbox = make_inbox(inbox_dir, store, queue, stable_s=0)
    (inbox_dir / "upload.mp4").write_bytes(b"a recording")
    (inbox_dir / "clip.mp4").symlink_to(tmp_path / "nowhere")  # would get a note in .error
    for _ in range(3):
        assert inbox.scan() == []
    assert list(victim.iterdir()) == [], "the inbox wrote through a planted link"
    assert (inbox_dir / "upload.mp4").read_bytes() == b"a recording"
    assert store.evidence_ids() == []
    assert any("is a symbolic link" in r.getMessage() or "is a symbolic link" in str(getattr(r, "reason", ""))
               for r in caplog.records)


def test_a_link_swapped_in_while_the_watcher_runs_is_refused(tmp_path: Path, store, queue):
    victim = tmp_path / "victim"
    victim.mkdir()
    inbox = make_inbox(tmp_path / "inbox", store, queue, stable_s=0.2)
    stop = threading.Event()
    watcher = threading.Thread(target=inbox.watch, args=(stop, 0.05), daemon=True)
    watcher.start()
    try:
        (inbox.folder / "first.mp4").write_bytes(b"first recording")
        deadline = time.monotonic() + 20
        while not (inbox.folder / ".ingested" / "first.mp4").exists():
            assert time.monotonic() < deadline, "the first upload was never moved"
            time.sleep(0.05)
        # The attacker swaps the folder for a link between two scans.
        (inbox.folder / ".ingested").rename(tmp_path / "moved-away")
        (inbox.folder / ".ingested").symlink_to(victim)
        (inbox.folder / "second.mp4").write_bytes(b"second recording")
        time.sleep(2)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert list(victim.iterdir()) == [], "an upload was moved through the swapped-in link"
    assert (inbox.folder / "second.mp4").read_bytes() == b"second recording"


def test_links_planted_in_the_store_and_work_folders_are_refused(store: LocalStore, tmp_path: Path):
    stored = store.put_original(io.BytesIO(b"video"), intake={"original_name": "a.mp4"}, actor="t")
    victim = tmp_path / "victim"
    victim.mkdir()
    (store.root / stored.evidence_id / "runs").symlink_to(victim)
    out = tmp_path / "out.txt"
    out.write_text("output")
    with pytest.raises(LinkRefused, match="symbolic link"):
        store.commit_run(stored.evidence_id, "intake-v2-aaaa", {"out.txt": out}, {"run_id": "intake-v2-aaaa"})
    (store.root / stored.evidence_id / "custody.jsonl").unlink()
    (store.root / stored.evidence_id / "custody.jsonl").symlink_to(victim / "custody.jsonl")
    with pytest.raises(LinkRefused):
        store.append_custody(stored.evidence_id, "audit result", "t", {})
    assert list(victim.iterdir()) == []
    # An item folder that is a link is not an item, and is never written through.
    fake = "f" * 64
    (store.root / fake).symlink_to(victim)
    assert fake not in store.evidence_ids()
    with pytest.raises(LinkRefused):
        store.append_custody(fake, "audit result", "t", {})
    (tmp_path / "work").symlink_to(victim)
    with pytest.raises(LinkRefused), private_workdir(tmp_path / "work", "run"):
        pass
    assert list(victim.iterdir()) == []
    assert any("symbolic link" in line for line in store.exposure())


# -- rule 4: nothing is readable by other local accounts --------------------------------------------


def test_created_files_are_owner_only_whatever_the_umask(tmp_path: Path):
    previous = os.umask(0)
    try:
        store = LocalStore(tmp_path / "store")
        stored = store.put_original(io.BytesIO(b"video"), intake={"original_name": "a.mp4"}, actor="t")
        out = tmp_path / "out.json"
        out.write_text("{}")
        store.commit_run(stored.evidence_id, "intake-v2-bbbb", {"out.json": out}, {"run_id": "intake-v2-bbbb"})
    finally:
        os.umask(previous)
    for path in [store.root, *store.root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:04o}"
    assert store.exposure() == []


def tagged_video(path: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-movflags", "use_metadata_tags", "-metadata", "location=+43.3180+045.6981/",
           "-metadata", "com.apple.quicktime.model=iPhone 12", str(path))
    return path


@pytest.mark.root
def test_another_local_account_can_read_nothing_the_worker_keeps(tmp_path: Path):
    needs_root()
    base = Path(tempfile.mkdtemp(prefix="evidence-shared-", dir="/tmp"))
    try:
        base.chmod(0o755)  # a world-traversable parent, as /srv or /home usually are
        cli = Cli(base / "home")
        video = tagged_video(base / "interview.mp4")
        cli.json("ingest", video, "--case", "C-secret")
        subprocess.run(cli.command("worker", "--once"), env=cli.env, check=True, capture_output=True, umask=0)
        assert subprocess.run(["grep", "-rl", "43.3180", str(cli.home)], capture_output=True).returncode == 0, \
            "the test is void: the GPS facts are not where the worker keeps them"
        as_nobody = subprocess.run([*NOBODY, "grep", "-rl", "43.3180", str(cli.home)], capture_output=True, text=True)
        assert as_nobody.returncode != 0 and as_nobody.stdout == "", as_nobody.stdout
        for path in [cli.home, *cli.home.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {mode:04o}"
        denied = subprocess.run([*NOBODY, "ls", str(cli.home)], capture_output=True, text=True)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        # The audit reports anything looser, wherever it is.
        probe_json = next(cli.home.rglob("probe.json"))
        probe_json.chmod(0o644)
        report = cli.json("audit", check=False)
        assert not report["ok"] and any(str(probe_json) in line for line in report["store"]["problems"])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_loose_home_is_made_owner_only(cli: Cli):
    cli.home.mkdir(mode=0o755)
    cli.home.chmod(0o755)
    cli("status")
    assert stat.S_IMODE(cli.home.stat().st_mode) == 0o700


def test_watch_once_exits_1_when_the_inbox_is_refused(cli: Cli, tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / ".ingested").symlink_to(tmp_path)
    (inbox / "a.mp4").write_bytes(b"recording")
    done = cli("watch", inbox, "--once", check=False)
    assert done.returncode == 1 and "symbolic link" in done.stderr
    assert (inbox / "a.mp4").exists()


@pytest.mark.root
def test_a_home_another_account_could_have_seeded_is_refused_not_adopted(tmp_path: Path):
    needs_root()
    base = Path(tempfile.mkdtemp(prefix="evidence-seeded-", dir="/tmp"))
    try:
        home = base / "home"
        home.mkdir()
        home.chmod(0o777)
        (home / "store").mkdir()
        os.chown(home / "store", 1000, 1000)  # made by another account while the home stood open
        cli = Cli(home)
        done = cli("status", check=False)
        assert done.returncode == 2 and "belong to another account" in done.stderr
        assert stat.S_IMODE(home.stat().st_mode) == 0o777, "a refused home must be left as it is"
        os.chown(home, 1000, 1000)
        home.chmod(0o700)
        done = cli("status", check=False)
        assert done.returncode == 2 and "belongs to another account" in done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
