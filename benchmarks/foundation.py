"""Foundation benchmarks, side by side with their baselines in one run.

1. Ingest hashing: LocalStore.put_original (stream copy + SHA-256 + fsync) and
   the re-verify read path, against `sha256sum` on the same 1 GiB file.
2. SQLite queue: enqueue + lease + ack cycles per second with two processes.
3. Custody appends: the journaled append (intent record, append, fsyncs) against
   a plain append + fsync of the same lines, the cost of surviving a cut write.
4. Probe of the bundled sample: the whole step against the gates added to make
   it safe (MP4 box walk + a stream listing that decodes nothing).

    .venv/bin/python benchmarks/foundation.py [--size-mib 1024] [--repeat 3] [--queue-jobs 2000]

Writes benchmarks/results/foundation-<UTC time>.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import mp4_boxes  # noqa: E402
from pipelines.pipeline import DEFAULT_TOOLS  # noqa: E402
from pipelines.probe import DEFAULTS, _inventory, probe_file  # noqa: E402
from pipelines.sniff import sniff_container  # noqa: E402
from worker import custody  # noqa: E402
from worker.backends.local import LocalStore  # noqa: E402
from worker.backends.local.custody_file import CustodyFile  # noqa: E402
from worker.backends.sqlite import SqliteQueue  # noqa: E402
from worker.fs.directory import Directory  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def make_file(path: Path, size: int) -> None:
    chunk = 16 * 2**20
    with open(path, "wb") as handle:
        for _ in range(size // chunk):
            handle.write(os.urandom(chunk))
        handle.write(os.urandom(size % chunk))


def bench_hashing(folder: Path, size: int, repeat: int) -> dict:
    source = folder / "footage.bin"
    make_file(source, size)
    expected = subprocess.run(["sha256sum", str(source)], check=True, capture_output=True, text=True).stdout.split()[0]
    times: dict[str, list[float]] = {"sha256sum": [], "put_original": [], "verify_read": []}
    for n in range(repeat):  # interleaved, so drift in machine load hits all three alike
        times["sha256sum"].append(timed(lambda: subprocess.run(["sha256sum", str(source)], check=True,
                                                               capture_output=True)))
        root = folder / f"store-{n}"

        def put(root: Path = root) -> None:
            with open(source, "rb", buffering=0) as handle:
                stored = LocalStore(root).put_original(handle, intake={"original_name": "f.bin"}, actor="bench")
            assert stored.evidence_id == expected

        times["put_original"].append(timed(put))
        times["verify_read"].append(timed(lambda root=root: LocalStore(root).verify_original(expected)))
        shutil.rmtree(root)
    median = {name: statistics.median(values) for name, values in times.items()}
    mib = size / 2**20
    return {
        "file_bytes": size,
        "repeat": repeat,
        "seconds": times,
        "median_seconds": median,
        "mib_per_s": {name: round(mib / value, 1) for name, value in median.items()},
        "ratio_vs_sha256sum": {
            "put_original": round(median["sha256sum"] / median["put_original"], 2),
            "verify_read": round(median["sha256sum"] / median["verify_read"], 2),
        },
        "goal": "put_original throughput >= 0.9x sha256sum",
        "note": "page cache warm for all three; put_original also writes and fsyncs a full copy",
    }


def _queue_client(db: str, jobs: int, barrier, out) -> None:
    queue = SqliteQueue(Path(db))
    barrier.wait()
    began = time.perf_counter()
    done = 0
    for n in range(jobs):
        queue.enqueue(f"{os.getpid():064x}"[-64:], "intake", {"n": n})
        job = queue.lease(60)
        if job is not None:
            queue.ack(job)
            done += 1
    out.put((done, time.perf_counter() - began))


def bench_queue(folder: Path, jobs_per_process: int, processes: int = 2) -> dict:
    db = folder / "queue.sqlite3"
    SqliteQueue(db)
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_queue_client, args=(str(db), jobs_per_process, barrier, out))
               for _ in range(processes)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    results = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    slowest = max(seconds for _, seconds in results)
    cycles = sum(done for done, _ in results)
    return {
        "processes": processes,
        "cycles": cycles,
        "cycles_per_process": [done for done, _ in results],
        "seconds": round(slowest, 3),
        "cycles_per_s": round(cycles / slowest, 1),
        "operations_per_s": round(3 * cycles / slowest, 1),
        "wall_seconds_including_start": round(wall, 3),
        "cycle": "enqueue + lease + ack, each its own durable transaction (WAL, synchronous=FULL)",
    }


def bench_custody(folder: Path, events: int) -> dict:
    """Appends per second: journaled (this software) and plain append + fsync (the baseline)."""
    seconds = {}
    with Directory.open(folder / "journaled", create=True) as item:
        log = CustodyFile(item, "0" * 64)
        began = time.perf_counter()
        for n in range(events):
            log.append(custody.AUDIT_RESULT, "bench", {"n": n}, recover=True)
        seconds["journaled"] = time.perf_counter() - began
        lines = item.read_bytes("custody.jsonl").splitlines(keepends=True)
    plain = folder / "plain.jsonl"
    began = time.perf_counter()
    for line in lines:
        with open(plain, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    seconds["plain_fsync"] = time.perf_counter() - began
    per_s = {name: round(events / value, 1) for name, value in seconds.items()}
    return {"events": events, "appends_per_s": per_s,
            "ratio_vs_plain": round(per_s["journaled"] / per_s["plain_fsync"], 2)}


def bench_probe(repeat: int) -> dict:
    sample = REPO / "worker" / "samples" / "street-walkers-1080p.mp4"
    whole, gates = [], []
    for _ in range(repeat):
        whole.append(timed(lambda: probe_file(sample, DEFAULTS)))
        container = sniff_container(sample)
        gates.append(timed(lambda c=container: (mp4_boxes.read_layout(sample),
                                                _inventory(sample, c, DEFAULTS, DEFAULT_TOOLS))))
    return {"file": sample.name, "repeat": repeat, "probe_s_median": round(statistics.median(whole), 3),
            "added_gates_s_median": round(statistics.median(gates), 3),
            "added_share": round(statistics.median(gates) / statistics.median(whole), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--queue-jobs", type=int, default=2000, help="cycles per process")
    parser.add_argument("--custody-events", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="evidence-bench-") as scratch:
        folder = Path(scratch)
        result = {
            "benchmark": "foundation",
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "hashing": bench_hashing(folder, args.size_mib * 2**20, args.repeat),
            "queue": bench_queue(folder, args.queue_jobs),
            "custody": bench_custody(folder, args.custody_events),
            "probe": bench_probe(5),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"foundation-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    hashing, queue = result["hashing"], result["queue"]
    print(f"hashing {args.size_mib} MiB: " + ", ".join(f"{k} {v} MiB/s" for k, v in hashing["mib_per_s"].items()))
    print(f"  vs sha256sum: put_original {hashing['ratio_vs_sha256sum']['put_original']}x, "
          f"verify_read {hashing['ratio_vs_sha256sum']['verify_read']}x (goal >= 0.9x)")
    print(f"queue, {queue['processes']} processes: {queue['cycles_per_s']} enqueue+lease+ack cycles/s "
          f"({queue['operations_per_s']} operations/s)")
    c, p = result["custody"], result["probe"]
    print(f"custody appends/s: journaled {c['appends_per_s']['journaled']}, plain append+fsync "
          f"{c['appends_per_s']['plain_fsync']} ({c['ratio_vs_plain']}x)")
    print(f"probe of the sample: {p['probe_s_median']} s, of which the added gates {p['added_gates_s_median']} s "
          f"({p['added_share'] * 100:.1f}%)")
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
