"""Jobs and upload events through SQS, evidence in S3: real HTTP to an AWS-speaking server on loopback."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest
from support import AWS_ENV, Cli, aws_client, ffmpeg


@pytest.fixture
def deployment(aws_endpoint: str, cli: Cli) -> dict:
    """A new bucket and queue made by 'evidence admin init-s3', and the settings that name them."""
    name = f"evidence-{uuid.uuid4().hex[:10]}"
    env = {**AWS_ENV, "EVIDENCE_STORE__BACKEND": "s3", "EVIDENCE_STORE__BUCKET": name,
           "EVIDENCE_STORE__ENDPOINT_URL": aws_endpoint, "EVIDENCE_STORE__REGION": "eu-central-1",
           "EVIDENCE_QUEUE__BACKEND": "sqs", "EVIDENCE_QUEUE__QUEUE_NAME": name,
           "EVIDENCE_QUEUE__ENDPOINT_URL": aws_endpoint, "EVIDENCE_QUEUE__REGION": "eu-central-1",
           "EVIDENCE_QUEUE__WAIT_TIME_S": "1"}
    done = json.loads(cli("admin", "init-s3", "--json", **env).stdout)["done"]
    assert any("Object Lock" in line for line in done) and any("notify" in line for line in done)
    again = json.loads(cli("admin", "init-s3", "--json", **env).stdout)["done"]   # checked, not remade
    assert "exists" in again[0]
    return {"bucket": name, "env": env, "s3": aws_client("s3", aws_endpoint), "sqs": aws_client("sqs", aws_endpoint)}


def _items(cli: Cli, env: dict) -> list[str]:
    return [key.split("/")[0] for key in [o["Key"] for o in aws_client(
        "s3", env["EVIDENCE_STORE__ENDPOINT_URL"]).list_objects_v2(Bucket=env["EVIDENCE_STORE__BUCKET"]).get(
        "Contents", [])] if len(key.split("/")[0]) == 64]


def test_an_upload_is_stored_and_processed_with_no_cli_call(deployment, cli: Cli, tiny_video):
    s3, env, bucket = deployment["s3"], deployment["env"], deployment["bucket"]
    s3.upload_file(str(tiny_video), bucket, "incoming/field interview 1.mp4")   # the key arrives as "+" encoded
    cli("worker", "--once", timeout=300, **env)
    [evidence_id] = set(_items(cli, env))
    shown = json.loads(cli("show", evidence_id, "--json", **env).stdout)
    assert shown["original"]["name"] == "field interview 1.mp4"
    [run] = shown["runs"]
    assert run["status"] == "committed" and "redacted.mp4" in run["outputs"]

    # The same upload announced again, and the same job sent twice: one committed run, nothing lost.
    s3.upload_file(str(tiny_video), bucket, "incoming/copy.mp4")
    url = deployment["sqs"].get_queue_url(QueueName=bucket)["QueueUrl"]
    job = {"schema": "evidence-worker/job/1", "job_id": "j1", "evidence_id": evidence_id, "pipeline": "intake",
           "params": {}, "nonce": None}
    for _ in range(2):
        deployment["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps(job))
    refused = cli("worker", "--once", timeout=300, check=False, **env)   # no request in custody asked for j1
    assert refused.returncode == 1 and "custody holds no request" in refused.stderr
    shown = json.loads(cli("show", evidence_id, "--json", **env).stdout)
    assert [r["status"] for r in shown["runs"]] == ["committed"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{evidence_id}/custody/")["Contents"]
    events = [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())["event"] for o in listed]
    assert events.count("ingested") == 1 and events.count("duplicate upload") == 1
    assert events.count("run committed") == 1 and events.count("run started") == 1
    assert json.loads(cli("audit", "--json", **env).stdout)["ok"]


def test_bad_messages_are_dead_lettered_with_their_reason_and_the_worker_goes_on(deployment, cli: Cli):
    sqs, env, bucket = deployment["sqs"], deployment["env"], deployment["bucket"]
    url = sqs.get_queue_url(QueueName=bucket)["QueueUrl"]
    def event(bucket_name: str, key: str) -> str:
        return json.dumps({"Records": [{"eventName": "ObjectCreated:Put",
                                        "s3": {"bucket": {"name": bucket_name}, "object": {"key": key}}}]})

    forged_upload = {"schema": "evidence-worker/job/1", "job_id": "x", "evidence_id": "e" * 64,
                     "pipeline": "upload", "params": {"bucket": bucket, "key": "private/notes.txt"}}
    bad = {"not JSON": "not json at all",
           "outside the upload prefix": event(bucket, "elsewhere/x.mp4"),
           "not the evidence bucket": event("another-team", "incoming/x.mp4"),
           "neither a job": json.dumps({"schema": "other"}),
           "may not ask for an upload": json.dumps(forged_upload),
           "malformed": json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]}),
           "0 records": json.dumps({"Records": []}),
           "wrong type": json.dumps({**forged_upload, "pipeline": "intake", "params": "abc"})}
    for body in bad.values():
        sqs.send_message(QueueUrl=url, MessageBody=body)
    done = cli("worker", "--once", timeout=120, **env)   # messages that are not jobs: no job failed, exit 0
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    status = json.loads(cli("status", "--json", **env).stdout)
    reasons = " | ".join(job["reason"] for job in status["dead_letters"])
    assert status["queue"]["dead"] == len(bad)
    assert all(said in reasons for said in bad), reasons
    assert _items(cli, env) == []   # nothing of another bucket or outside the prefix was stored


def _custody_events(s3, bucket: str, evidence_id: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{evidence_id}/custody/")["Contents"]
    return [json.loads(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())["event"] for o in listed]


@pytest.mark.slow
def test_two_workers_share_the_queue_and_a_killed_one_s_job_comes_back(deployment, cli: Cli, tmp_path, tiny_video):
    env = {**deployment["env"], "EVIDENCE_QUEUE__VISIBILITY_TIMEOUT_S": "4"}
    s3, bucket = deployment["s3"], deployment["bucket"]
    other = tmp_path / "other.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=3", "-f", "lavfi", "-i", "sine=duration=3",
           "-c:v", "libx264", "-c:a", "aac", "-shortest", str(other))
    ids = [json.loads(cli("ingest", path, "--json", **env).stdout)["ingested"][0]["evidence_id"]
           for path in (tiny_video, other)]

    # One worker is killed as soon as it holds a job: that job returns once its lease runs out.
    victim = cli.popen("worker", **env)
    deadline, leased = time.monotonic() + 120, False
    while time.monotonic() < deadline and not leased:
        leased = "job leased" in victim.stderr.readline()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert leased
    time.sleep(4.5)

    workers = [cli.popen("worker", "--once", **env) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()
    for evidence_id in ids:
        events = _custody_events(s3, bucket, evidence_id)
        assert events.count("run committed") == 1, events
    assert json.loads(cli("audit", "--json", **env).stdout)["ok"]


def test_a_missing_queue_or_bucket_stops_the_worker_at_start_with_the_reason(deployment, cli: Cli):
    env = deployment["env"]
    for upload_prefix, store_prefix in (("", ""), ("incoming/", "incoming")):
        done = cli("worker", "--once", check=False, **{**env, "EVIDENCE_QUEUE__UPLOAD_PREFIX": upload_prefix,
                                                       "EVIDENCE_STORE__PREFIX": store_prefix})
        assert done.returncode == 2 and "upload_prefix" in done.stderr and "Traceback" not in done.stderr
    done = cli("worker", "--once", check=False, **{**env, "EVIDENCE_QUEUE__QUEUE_NAME": "no-such-queue"})
    assert done.returncode == 2 and "no-such-queue" in done.stderr and "Traceback" not in done.stderr
    done = cli("worker", "--once", check=False, **{**env, "EVIDENCE_STORE__BUCKET": "no-such-bucket"})
    assert done.returncode == 2 and "no-such-bucket" in done.stderr and "Traceback" not in done.stderr
