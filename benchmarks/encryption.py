"""Encryption benchmark, all figures from one run on the same 1 GiB file of random bytes:

1. the envelope format alone: sealing and opening vs ``sha256sum`` (the hash intake pays anyway);
2. intake into the local store with encryption vs without (the issue's goal: >= 0.7x);
3. decrypt-and-verify reads of the stored original (``verify_original``) sealed vs plain;
4. replication of the sealed item to an S3 replica on loopback (moto's server, in memory: a floor,
   not a forecast) vs a plain boto3 upload of the same file to the same server.

Files on disk, page cache warm, three interleaved runs for 1-3 (medians),
one for 4; MiB/s and ratios.

    .venv/bin/python benchmarks/encryption.py [--gib 1]

Writes benchmarks/results/encryption-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

import record

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


def _timed(timings: dict[str, list[float]], name: str, action) -> None:
    began = time.monotonic()
    action()
    timings.setdefault(name, []).append(time.monotonic() - began)


def _envelope_and_store(plain: Path, work: Path, key) -> dict[str, list[float]]:
    from worker.backends.local import LocalStore
    from worker.encryption import envelope

    sealed, opened = work / "sealed.bin", work / "opened.bin"
    timings: dict[str, list[float]] = {}

    def seal():
        with open(plain, "rb") as source, open(sealed, "wb") as target:
            envelope.seal(source, target, key, b"benchmark")

    def unseal():
        with open(sealed, "rb") as source, open(opened, "wb") as target:
            envelope.unseal(source, target, key, b"benchmark")

    for attempt in range(3):
        _timed(timings, "sha256sum", lambda: subprocess.run(["sha256sum", str(plain)], check=True,
                                                            capture_output=True))
        _timed(timings, "seal", seal)
        _timed(timings, "open", unseal)
        for kind, with_key in (("plain", None), ("sealed", key)):
            store = LocalStore(work / f"store-{kind}-{attempt}", min_free_bytes=0, key=with_key)
            began = time.monotonic()
            with open(plain, "rb") as handle:
                evidence_id = store.put_original(handle, intake={"original_name": "big.bin"}, actor="bench").evidence_id
            timings.setdefault(f"intake_{kind}", []).append(time.monotonic() - began)
            _timed(timings, f"read_{kind}", partial(store.verify_original, evidence_id))
            if attempt < 2:
                subprocess.run(["chmod", "-R", "u+w", str(store.root)], check=True)
                shutil.rmtree(store.root)
        print({name: round(values[-1], 2) for name, values in timings.items()}, flush=True)
    return timings


def _replication(plain: Path, work: Path, key) -> dict[str, list[float]]:
    import boto3
    from moto.server import ThreadedMotoServer

    from worker.backends.local import LocalStore
    from worker.backends.s3 import S3Store
    from worker.processing.replication import replicate

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="eu-central-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        timings: dict[str, list[float]] = {}
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"},
                         ObjectLockEnabledForBucket=True)
        _timed(timings, "boto3_upload", lambda: s3.upload_file(str(plain), bucket, "plain/big.bin"))
        primary = LocalStore(next(work.glob("store-sealed-*")), min_free_bytes=0, key=key)
        [evidence_id] = primary.evidence_ids()
        replica = S3Store(s3, bucket, prefix="replica", retention_days=1, spool_dir=work, key=key)
        _timed(timings, "replicate_s3", partial(replicate, primary, replica, "offsite", evidence_id, actor="bench",
                                                work=work / "replication"))
        return timings
    finally:
        server.stop()


def main() -> int:
    from worker.encryption import keys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    key = keys.master(os.urandom(32))
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        work = Path(tmp)
        plain = work / "plain.bin"
        with open(plain, "wb") as out:
            for _ in range(int(args.gib * 1024)):
                out.write(os.urandom(2**20))
        size = plain.stat().st_size
        timings = _envelope_and_store(plain, work, key)
        timings |= _replication(plain, work, key)
    rates = {name: size / 2**20 / statistics.median(values) for name, values in timings.items()}
    results = {
        "bytes": size, "seconds": timings, "mib_per_s": {k: round(v, 1) for k, v in rates.items()},
        "seal_vs_sha256sum": round(rates["seal"] / rates["sha256sum"], 2),
        "open_vs_sha256sum": round(rates["open"] / rates["sha256sum"], 2),
        "intake_sealed_vs_plain": round(rates["intake_sealed"] / rates["intake_plain"], 2),
        "read_sealed_vs_plain": round(rates["read_sealed"] / rates["read_plain"], 2),
        "replicate_s3_vs_boto3_upload": round(rates["replicate_s3"] / rates["boto3_upload"], 2),
    }
    print(results["mib_per_s"], {k: v for k, v in results.items() if "_vs_" in k})
    record.save("encryption", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
