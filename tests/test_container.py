"""The image as the Dockerfile builds it (tests/container_image.py: on a Debian base made here, with
podman), run as its service account with no network.

Part of every run: once the session has collected them, it starts the build in the background (conftest.py),
and these tests, run last, wait for it (about 3.5 minutes on 2 cores from nothing, mostly downloads). They
skip, saying why, only where podman, runc and mmdebstrap are not installed or the tests do not run as root;
-m "not container" leaves them out."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from container_image import BUILD_DIR_ENV, BUILD_TIMEOUT_S, IMAGE, missing, podman, wait
from support import ffmpeg

# The first test waits for the background build, which may outlast the per-test limit of the rest.
pytestmark = [pytest.mark.container, pytest.mark.timeout(BUILD_TIMEOUT_S + 900)]


@pytest.fixture(scope="module")
def image() -> str:
    why = missing()
    if why:
        pytest.skip(why)
    code, log = wait(Path(os.environ[BUILD_DIR_ENV]))   # conftest.py started it, having collected this file
    assert code == 0, log[-6000:]
    return IMAGE


def _run(image: str, *command: str, volume: Path | None = None) -> subprocess.CompletedProcess:
    mount = ["-v", f"{volume}:/data"] if volume else []
    return podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", *mount, image, *command,
                   timeout=600)


def test_the_image_runs_the_demo_as_its_service_account_offline(image: str):
    done = _run(image, "sh", "-c", "id -u && evidence demo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == "10001" and "'done': 1" in done.stdout and "'dead': 0" in done.stdout
    [inspected] = json.loads(podman("image", "inspect", image).stdout)
    assert inspected["Healthcheck"]["Test"] == ["CMD", "evidence", "-q", "status", "--json"]


def test_the_image_ingests_from_a_mounted_inbox(image: str, tmp_path: Path):
    home = tmp_path / "data"
    (home / "inbox").mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2", "-pix_fmt", "yuv420p",
           str(home / "inbox" / "field clip.mp4"))
    for path in (home, home / "inbox", home / "inbox" / "field clip.mp4"):
        os.chown(path, 10001, 10001)
    home.chmod(0o700)
    watched = _run(image, "evidence", "watch", "--once", "/data/inbox", volume=home)
    assert watched.returncode == 0, watched.stderr[-3000:]
    worked = _run(image, "evidence", "worker", "--once", volume=home)
    assert worked.returncode == 0, worked.stderr[-3000:]
    status = json.loads(_run(image, "evidence", "status", "--json", volume=home).stdout)
    assert status["queue"]["done"] == 1 and not status["dead_letters"]


def test_the_image_holds_no_test_tools_and_its_models_are_read_only(image: str):
    listed = _run(image, "python3", "-c", "import importlib.metadata as m\n"
                                          "for d in m.distributions(): print(d.metadata['Name'].lower())")
    names = set(listed.stdout.split())
    assert "evidence-worker" in names and "c2pa-python" in names, listed.stdout[-2000:]
    # No test tools, and no installer: what runs is what the lock file named.
    assert not names & {"pytest", "pytest-xdist", "moto", "jiwer", "pypdf", "ruff", "pip", "setuptools"}
    found = _run(image, "find", "/opt/evidence-models", "-mindepth", "1", "-exec", "stat", "-c", "mode %a %U %n",
                 "{}", "+")
    # Root's, readable by the service account, writable by nobody else: weights 0444, folders 0755.
    modes = [line.split() for line in found.stdout.splitlines() if line.startswith("mode ")]
    assert modes and all(owner == "root" and mode in ("444", "755") for _, mode, owner, _ in modes), modes
    size = json.loads(podman("image", "inspect", image).stdout)[0]["Size"]
    print(f"image size: {size / 1e9:.2f} GB")
