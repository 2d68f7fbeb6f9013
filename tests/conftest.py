"""Shared fixtures: real ffmpeg, real files, real processes. Nothing here is a mock."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import container_image as image
import pytest
from support import SAMPLE_VIDEO, SHARED_DATA, Cli, aws_client, evidence_env, ffmpeg
from tsa import TimeStampAuthority

from worker.backends.local import LocalStore
from worker.backends.sqlite import SqliteQueue
from worker.config import Settings, load_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts or reaches the loopback AWS server is marked ``aws`` (-m "not aws" leaves
    them out where moto cannot run). The container tests go last: they wait for the image build that
    ``pytest_configure`` started, which the rest of the run gives time to finish."""
    for item in items:
        kinds = [str(v) for v in getattr(getattr(item, "callspec", None), "params", {}).values()]
        if "aws_endpoint" in getattr(item, "fixturenames", ()) or any(k.startswith(("s3", "sqs")) for k in kinds):
            item.add_marker(pytest.mark.aws)
    items.sort(key=lambda item: item.get_closest_marker("container") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run in one process: where container tests were collected, the image build starts now, in the
    background (tests/container_image.py), while the other tests run."""
    if not hasattr(session.config, "workerinput"):   # an xdist worker: its controller decides, below
        _start_image_build(session.config, [item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """The same for a run in xdist's workers, once the first of them has collected (the others inherit
    nothing from here: the container tests find the build through the environment the workers started in,
    so the build's folder is made up front, below)."""
    _start_image_build(node.config, ids)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and not image.missing():
        # Named before xdist starts its workers, which inherit the environment; filled only if a build starts.
        os.environ[image.BUILD_DIR_ENV] = tempfile.mkdtemp(prefix="evidence-image-build-")


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    build = config.stash.get(_IMAGE_BUILD, None)
    if build is not None:
        if build.poll() is None:   # the session was cut short: so is the build
            os.killpg(build.pid, signal.SIGTERM)
        build.wait(60)
    folder = os.environ.pop(image.BUILD_DIR_ENV, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)   # the build's log; a failing test printed it


_IMAGE_BUILD = pytest.StashKey[subprocess.Popen]()


def _start_image_build(config: pytest.Config, ids: list[str]) -> None:
    folder = os.environ.get(image.BUILD_DIR_ENV)
    if folder and _IMAGE_BUILD not in config.stash and any("test_container.py::" in i for i in ids):
        config.stash[_IMAGE_BUILD] = image.start_in_background(Path(folder))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data folder {SHARED_DATA} (../shared/data) is not there")
    return SHARED_DATA


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(environ=evidence_env(home))


@pytest.fixture
def store(settings: Settings) -> LocalStore:
    return LocalStore(settings.store_root)


@pytest.fixture
def queue(settings: Settings) -> SqliteQueue:
    return SqliteQueue(settings.queue_path, max_attempts=2, backoff_base_s=0)


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real recording (H.264 and AAC in MP4) of three seconds, 160x120: for tests of the plumbing around a
    run (queues, retries, lost jobs), where what the steps find does not matter and a full-size intake
    would only cost time."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=3", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(path))
    return path


@pytest.fixture(scope="session")
def processed_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding the sample video, ingested and run through the intake by the real command: made once
    per test session, by whichever parallel worker (pytest-xdist) asks first, and read only through
    ``sample_item``'s copies (a full intake takes about half a minute)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent   # the session's folder, above each worker's own
    folder, home = shared / "processed-sample", shared / "processed-sample" / "home"
    with open(shared / "processed-sample.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # the other workers wait for it, then read it
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)   # what a worker that failed half-way left
            folder.mkdir()
            made = Cli(home)
            made.json("ingest", SAMPLE_VIDEO, "--case", "C-<b>17</b>")
            made("worker", "--once", timeout=300)
            (folder / "done").touch()
    return home


@pytest.fixture
def sample_item(processed_sample: Path, cli: Cli) -> dict:
    """This test's own home, a copy of the processed sample's (modes kept; it holds no absolute path), so a
    test may reprocess, tamper with or export from it freely: {"id", "run", "video" (the masked video)}."""
    shutil.copytree(processed_sample, cli.home, symlinks=True)
    [evidence_id] = [p.name for p in (cli.home / "store").iterdir() if len(p.name) == 64]
    [run] = cli.json("show", evidence_id)["runs"]
    return {"id": evidence_id, "run": run, "video": Path(run["location"]) / "redacted.mp4"}


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """A real AWS-speaking HTTP server on loopback (moto's server mode): S3, SQS and KMS for the tests."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def locked_bucket(aws_endpoint: str) -> str:
    """A new bucket with versioning and Object Lock, as 'evidence admin init-s3' makes one."""
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    aws_client("s3", aws_endpoint).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[TimeStampAuthority]:
    """A real RFC 3161 time-stamp authority on loopback (OpenSSL's ``ts -reply``), with its own root."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    authority = TimeStampAuthority(tmp_path / "tsa")
    yield authority
    authority.close()
