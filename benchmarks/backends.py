"""Backends benchmark: ingest into S3 (loopback, moto's server) vs LocalStore, and jobs per minute with 1 and 2
workers on SQS, same run.

Ingest: one file of random bytes (default 1 GiB) stored by LocalStore and by
S3Store (multipart, SHA-256 checksums, Object Lock), interleaved, twice
each; the median in MiB/s and the ratio. The S3 server is moto in this
process's machine: it keeps objects in memory and is much slower than real
S3 or MinIO, so the S3 figure is a floor for this code, not a forecast.

Jobs per minute: N short videos (default 6) ingested into S3 + SQS, then
processed by 1 worker process, then the same number again by 2 at once.

    .venv/bin/python benchmarks/backends.py [--gib 1] [--jobs 6]

Writes benchmarks/results/backends-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import record

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-central-1"}


def _client(service: str, endpoint: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="eu-central-1", aws_access_key_id="bench",
                        aws_secret_access_key="bench")


def _ingest(endpoint: str, work: Path, gib: float) -> dict:
    from worker.backends.local import LocalStore
    from worker.backends.s3 import S3Store

    big = work / "big.bin"
    with open(big, "wb") as out:
        for _ in range(int(gib * 1024)):
            out.write(os.urandom(2**20))
    size = big.stat().st_size
    s3 = _client("s3", endpoint)
    timings: dict[str, list[float]] = {"local": [], "s3": []}
    for attempt in range(2):
        for kind in ("local", "s3"):
            if kind == "local":
                store = LocalStore(work / f"store-{attempt}")
            else:
                bucket = f"bench-{uuid.uuid4().hex[:10]}"
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"},
                                 ObjectLockEnabledForBucket=True)
                store = S3Store(s3, bucket, retention_days=1, spool_dir=work)
            began = time.monotonic()
            with open(big, "rb") as handle:
                store.put_original(handle, intake={"original_name": "big.bin"}, actor="bench")
            timings[kind].append(time.monotonic() - began)
            print(f"ingest {kind}: {timings[kind][-1]:.1f} s", flush=True)
    rates = {kind: size / 2**20 / statistics.median(values) for kind, values in timings.items()}
    return {"bytes": size, "seconds": timings, "mib_per_s": {k: round(v, 1) for k, v in rates.items()},
            "s3_vs_local": round(rates["s3"] / rates["local"], 3)}


def _jobs(endpoint: str, work: Path, count: int) -> dict:
    videos = []
    for number in range(count * 2):
        path = work / f"v{number}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=640x360:rate=25:duration=4",
                        "-f", "lavfi", "-i", f"sine=frequency={200 + number}:duration=4", "-c:v", "libx264",
                        "-c:a", "aac", "-shortest", str(path)], check=True)
        videos.append(path)
    results = {}
    for workers, batch in ((1, videos[:count]), (2, videos[count:])):
        name = f"bench-{uuid.uuid4().hex[:10]}"
        env = {**os.environ, **AWS, "EVIDENCE_HOME": str(work / f"home-{workers}"),
               "EVIDENCE_STORE__BACKEND": "s3", "EVIDENCE_STORE__BUCKET": name,
               "EVIDENCE_STORE__ENDPOINT_URL": endpoint, "EVIDENCE_STORE__REGION": "eu-central-1",
               "EVIDENCE_QUEUE__BACKEND": "sqs", "EVIDENCE_QUEUE__QUEUE_NAME": name,
               "EVIDENCE_QUEUE__ENDPOINT_URL": endpoint, "EVIDENCE_QUEUE__REGION": "eu-central-1",
               "EVIDENCE_QUEUE__WAIT_TIME_S": "1", "EVIDENCE_LOG_LEVEL": "WARNING"}
        evidence = [sys.executable, "-m", "worker"]
        subprocess.run([*evidence, "admin", "init-s3"], env=env, check=True, cwd=REPO, capture_output=True)
        subprocess.run([*evidence, "ingest", *map(str, batch)], env=env, check=True, cwd=REPO, capture_output=True)
        began = time.monotonic()
        running = [subprocess.Popen([*evidence, "worker", "--once"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(workers)]
        codes = [p.wait() for p in running]
        elapsed = time.monotonic() - began
        results[f"{workers}_workers"] = {"jobs": len(batch), "seconds": round(elapsed, 1), "exit_codes": codes,
                                         "jobs_per_minute": round(len(batch) / elapsed * 60, 2)}
        print(f"{workers} worker(s): {len(batch)} jobs in {elapsed:.1f} s", flush=True)
    results["two_vs_one"] = round(results["2_workers"]["jobs_per_minute"] / results["1_workers"]["jobs_per_minute"], 2)
    return results


def main() -> int:
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=6)
    args = parser.parse_args()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
            results = {"machine": f"{os.cpu_count()} cores", "server": "moto (in-memory, same machine)",
                       "ingest": _ingest(endpoint, Path(tmp), args.gib),
                       "jobs": _jobs(endpoint, Path(tmp), args.jobs)}
    finally:
        server.stop()
    print(json.dumps(results, indent=2))
    record.save("backends", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
