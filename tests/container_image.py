"""The image as the Dockerfile builds it, on a Debian base made here (Docker Hub is not reachable from CI),
built with podman. The build takes minutes and mostly waits on downloads, so a test session that collected the
container tests starts it in the background (conftest.py) and they wait for it at the end of the run.

    python tests/container_image.py OUT     builds, writing OUT/build.log, then OUT/rc (the exit status) last

Needs root, podman, runc and mmdebstrap (.ci/setup installs them where it can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = "localhost/evidence-test-bookworm-minbase"
IMAGE = "localhost/evidence-worker-test"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evidence-worker-tests"
# Where a session's background build reports (set by conftest.py for the test processes it starts).
BUILD_DIR_ENV = "EVIDENCE_TEST_IMAGE_BUILD"
BUILD_TIMEOUT_S = 1800


def missing() -> str | None:
    """Why podman cannot run here, or None."""
    absent = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if absent:
        return f"needs {', '.join(absent)} (apt-get install podman runc mmdebstrap; .ci/setup tries)"
    if os.geteuid() != 0:
        return "needs root for podman's chroot builds and runc"
    return None


def podman(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    # runc: crun cannot set up cgroups on these machines. No default ulimits: podman as root raises the
    # open-file and process limits past what this sandbox lets any process set, and the container fails.
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists():
        conf.write_text("[containers]\ndefault_ulimits = []\n")
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CONTAINERS_CONF": str(conf)}, **kwargs)


def build(log: Path) -> int:
    """Build IMAGE from this checkout; the tools' output goes to ``log``. 0 when built."""
    with open(log, "a") as out:
        def step(what: str, done: subprocess.CompletedProcess) -> bool:
            out.write(f"== {what}: exit {done.returncode}\n{done.stdout[-20000:]}{done.stderr[-20000:]}\n")
            out.flush()
            return done.returncode == 0

        tarball = CACHE / "bookworm-minbase.tar"
        CACHE.mkdir(parents=True, exist_ok=True)
        if not tarball.exists():
            partial = tarball.with_suffix(".partial.tar")
            made = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
                                   str(partial)], capture_output=True, text=True, timeout=900)
            if not step("mmdebstrap", made):
                return made.returncode or 1
            partial.rename(tarball)
        if podman("image", "exists", BASE).returncode != 0 and not step("import", podman("import", str(tarball),
                                                                                            BASE)):
            return 1
        # The host's CA bundle is lent to the build only (a volume, not a layer): this network's TLS proxy.
        built = podman("build", "--format", "docker", "--isolation", "chroot", "--network", "host",
                       "--build-arg", f"BASE={BASE}", "-v", "/etc/ssl/certs/ca-certificates.crt:"
                       "/etc/ssl/certs/ca-certificates.crt:ro", "-t", IMAGE, str(REPO), timeout=BUILD_TIMEOUT_S)
        return 0 if step("build", built) else (built.returncode or 1)


def start_in_background(out: Path) -> subprocess.Popen:
    """Start ``build`` in a process of its own, reporting to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "build.log", "a") as log:   # a group of its own: stopped whole with the session
        return subprocess.Popen([sys.executable, __file__, str(out)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def wait(out: Path) -> tuple[int, str]:
    """The exit status and log of the background build reporting to ``out``, once it is done."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S + 900
    while not (out / "rc").exists():
        if time.monotonic() > deadline:
            return 124, "the background image build did not finish in time"
        time.sleep(2)
    return int((out / "rc").read_text()), (out / "build.log").read_text(errors="replace")


if __name__ == "__main__":
    report = Path(sys.argv[1])
    try:
        code = build(report / "build.log")
    except Exception as exc:   # reported to the waiting test, which fails with it
        with open(report / "build.log", "a") as log:
            log.write(f"== the build raised: {exc!r}\n")
        code = 1
    (report / "rc.partial").write_text(str(code))
    (report / "rc.partial").rename(report / "rc")
