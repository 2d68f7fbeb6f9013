"""Encryption benchmark: sealing and opening a 1 GiB file with the envelope format vs sha256sum of it, same run.

Files on disk, page cache warm, three interleaved runs; medians in MiB/s
and as ratios to sha256sum (intake hashes every byte anyway, so this is the
cost encryption adds on top of what is already paid).

    .venv/bin/python benchmarks/encryption.py [--gib 1]

Writes benchmarks/results/encryption-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]


def main() -> int:
    from worker.encryption import envelope, keys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    key = keys.master(os.urandom(32))
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        plain, sealed, opened = Path(tmp) / "plain.bin", Path(tmp) / "sealed.bin", Path(tmp) / "opened.bin"
        with open(plain, "wb") as out:
            for _ in range(int(args.gib * 1024)):
                out.write(os.urandom(2**20))
        size = plain.stat().st_size
        timings: dict[str, list[float]] = {"sha256sum": [], "seal": [], "open": []}
        for _ in range(3):
            began = time.monotonic()
            subprocess.run(["sha256sum", str(plain)], check=True, capture_output=True)
            timings["sha256sum"].append(time.monotonic() - began)
            began = time.monotonic()
            with open(plain, "rb") as source, open(sealed, "wb") as target:
                envelope.seal(source, target, key, b"benchmark")
            timings["seal"].append(time.monotonic() - began)
            began = time.monotonic()
            with open(sealed, "rb") as source, open(opened, "wb") as target:
                envelope.unseal(source, target, key, b"benchmark")
            timings["open"].append(time.monotonic() - began)
    rates = {name: size / 2**20 / statistics.median(values) for name, values in timings.items()}
    results = {"bytes": size, "seconds": timings, "mib_per_s": {k: round(v, 1) for k, v in rates.items()},
               "seal_vs_sha256sum": round(rates["seal"] / rates["sha256sum"], 2),
               "open_vs_sha256sum": round(rates["open"] / rates["sha256sum"], 2)}
    print(results["mib_per_s"], results["seal_vs_sha256sum"], results["open_vs_sha256sum"])
    record.save("encryption", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
