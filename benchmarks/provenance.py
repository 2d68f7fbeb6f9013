"""Provenance benchmark: signing and verifying a 1 GiB video against sha256sum of the same file, same run.

The input is the bundled sample looped (stream copy) to about 1 GiB of MP4.
Each contender runs three times, interleaved, page cache warm; the median is
reported in MB/s and as a ratio to sha256sum (the issue's goal: >= 0.5x).

    .venv/bin/python benchmarks/provenance.py [--gib 1]

Writes benchmarks/results/provenance-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import record

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
SAMPLE = REPO / "worker" / "samples" / "street-walkers-1080p.mp4"


def main() -> int:
    from pipelines.provenance import credentials, manifest
    from pipelines.provenance.verify import verify

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-provenance-") as tmp:
        work = Path(tmp)
        loops = int(args.gib * 2**30 / SAMPLE.stat().st_size) + 1
        big = work / "big.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(SAMPLE), "-c", "copy",
                        str(big)], check=True)
        size = big.stat().st_size
        paths = credentials.make_test_ca(work / "ca")
        creds = credentials.from_files(paths["chain"], paths["key"], paths["ca"])
        definition = manifest.manifest("big.mp4", {"name": "bench", "version": "1"},
                                       [{"action": "c2pa.transcoded"}], {"original_sha256": "x"},
                                       manifest.parent_ingredient("sample", "video/mp4"))
        timings: dict[str, list[float]] = {"sha256sum": [], "sign": [], "verify": []}
        for attempt in range(3):
            began = time.monotonic()
            subprocess.run(["sha256sum", str(big)], check=True, capture_output=True)
            timings["sha256sum"].append(time.monotonic() - began)
            signed = work / f"signed-{attempt}.mp4"
            began = time.monotonic()
            manifest.sign(big, signed, definition, creds)
            timings["sign"].append(time.monotonic() - began)
            began = time.monotonic()
            report = verify(signed, creds.anchors_pem)
            timings["verify"].append(time.monotonic() - began)
            assert report["trust"] == "trusted", report
            signed.unlink()
        medians = {name: statistics.median(values) for name, values in timings.items()}
        rates = {name: round(size / 2**20 / seconds, 1) for name, seconds in medians.items()}
        results = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "bytes": size,
            "seconds": {name: [round(v, 2) for v in values] for name, values in timings.items()},
            "mib_per_s": rates,
            "vs_sha256sum": {name: round(rates[name] / rates["sha256sum"], 2) for name in ("sign", "verify")},
        }
    for name, rate in rates.items():
        print(f"{name:10s} {rate:8.1f} MiB/s  {rate / rates['sha256sum']:.2f}x sha256sum")
    record.save("provenance", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
