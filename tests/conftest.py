"""Shared fixtures: real ffmpeg, real files, real processes. Nothing here is a mock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.backends.local import LocalStore
from worker.backends.sqlite import SqliteQueue
from worker.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_VIDEO = REPO / "worker" / "samples" / "street-walkers-1080p.mp4"
SLOW_CLI = REPO / "tests" / "helpers" / "slow_pipeline.py"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data folder {SHARED_DATA} (../shared/data) is not there")
    return SHARED_DATA


def ffmpeg(*args: str) -> None:
    """Make test media with the real ffmpeg."""
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def evidence_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVIDENCE_")}
    env.update({
        "EVIDENCE_HOME": str(home),
        "EVIDENCE_QUEUE__BACKOFF_BASE_S": "0",
        "EVIDENCE_QUEUE__MAX_ATTEMPTS": "2",
        "EVIDENCE_WORKER__POLL_INTERVAL_S": "0.2",
        "EVIDENCE_WORKER__INBOX_STABLE_S": "0.5",
        "EVIDENCE_STORE__MIN_FREE_BYTES": "0",
        "EVIDENCE_OPERATOR": "test-operator",
    })
    env.update(overrides)
    return env


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings(environ=evidence_env(home))


@pytest.fixture
def store(settings: Settings) -> LocalStore:
    return LocalStore(settings.store_root)


@pytest.fixture
def queue(settings: Settings) -> SqliteQueue:
    return SqliteQueue(settings.queue_path, max_attempts=2, backoff_base_s=0)


class Cli:
    """The real ``evidence`` command in a child process, on one EVIDENCE_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.env = evidence_env(home)

    def command(self, *args: str, slow: bool = False) -> list[str]:
        entry = [str(SLOW_CLI)] if slow else ["-m", "worker"]
        return [sys.executable, *entry, *map(str, args)]

    def __call__(self, *args: str, slow: bool = False, check: bool = True, timeout: float = 120,
                 **env: str) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args, slow=slow), cwd=REPO, env={**self.env, **env},
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"evidence {' '.join(map(str, args))} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str, **kwargs) -> dict:
        return json.loads(self(*args, "--json", **kwargs).stdout)

    def popen(self, *args: str, slow: bool = False, **env: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args, slow=slow), cwd=REPO, env={**self.env, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real recording (H.264 and AAC in MP4) of one second, 160x120: for tests of the plumbing around a
    run (queues, retries, lost jobs), where what the steps find does not matter and a full-size intake
    would only cost time."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
           str(path))
    return path


@pytest.fixture(scope="session")
def processed_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding the sample video, ingested and run through the intake by the real command: made once
    per session (a full intake takes about half a minute), read only through ``sample_item``'s copies."""
    home = tmp_path_factory.mktemp("processed-sample") / "home"
    made = Cli(home)
    made.json("ingest", SAMPLE_VIDEO, "--case", "C-<b>17</b>")
    made("worker", "--once", timeout=300)
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


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}


def aws_client(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="eu-central-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def locked_bucket(aws_endpoint: str) -> str:
    """A new bucket with versioning and Object Lock, as 'evidence admin init-s3' makes one."""
    name = f"evidence-{uuid.uuid4().hex[:12]}"
    aws_client("s3", aws_endpoint).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}, ObjectLockEnabledForBucket=True)
    return name
