"""The image as the Dockerfile builds it, on a Debian base made here (Docker Hub is not reachable from CI):
built with podman once, then run as its service account with no network.

Opt-in (`-m container`): building takes about three minutes on 2 cores, which the 12-minute suite
cannot hold. Needs root, podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO, ffmpeg

pytestmark = pytest.mark.container

BASE = "localhost/evidence-test-bookworm-minbase"
IMAGE = "localhost/evidence-worker-test"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evidence-worker-tests"


def _podman(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    # runc: crun cannot set up cgroups on these machines.
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install podman runc mmdebstrap)")
    if os.geteuid() != 0:
        pytest.skip("needs root for podman's chroot builds and runc")
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / "bookworm-minbase.tar"
    if not tarball.exists():
        subprocess.run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
                        str(tarball)], check=True, capture_output=True, timeout=900)
    if _podman("image", "exists", BASE).returncode != 0:
        assert _podman("import", str(tarball), BASE).returncode == 0
    # The host's CA bundle is lent to the build only (a volume, not a layer): this network's TLS proxy.
    built = _podman("build", "--format", "docker", "--isolation", "chroot", "--network", "host",
                    "--build-arg", f"BASE={BASE}", "-v", "/etc/ssl/certs/ca-certificates.crt:"
                    "/etc/ssl/certs/ca-certificates.crt:ro", "-t", IMAGE, str(REPO), timeout=1800)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def _run(image: str, *command: str, volume: Path | None = None) -> subprocess.CompletedProcess:
    mount = ["-v", f"{volume}:/data"] if volume else []
    return _podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", *mount, image, *command,
                   timeout=600)


def test_the_image_runs_the_demo_as_its_service_account_offline(image: str):
    done = _run(image, "sh", "-c", "id -u && evidence demo")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == "10001" and "'done': 1" in done.stdout and "'dead': 0" in done.stdout
    [inspected] = json.loads(_podman("image", "inspect", image).stdout)
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
    size = json.loads(_podman("image", "inspect", image).stdout)[0]["Size"]
    print(f"image size: {size / 1e9:.2f} GB")
