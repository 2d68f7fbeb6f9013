"""What the tests share besides fixtures: paths, the real ``evidence`` command in a child process, test media
made with the real ffmpeg, a client for the loopback AWS server. A module of its own, so a test imports it by
name instead of importing ``conftest``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_VIDEO = REPO / "worker" / "samples" / "street-walkers-1080p.mp4"
SLOW_CLI = REPO / "tests" / "helpers" / "slow_pipeline.py"


def ffmpeg(*args: str) -> None:
    """Make test media with the real ffmpeg."""
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True, stdin=subprocess.DEVNULL)


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


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}


def aws_client(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="eu-central-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
