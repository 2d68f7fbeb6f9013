"""Redaction benchmark: our redact step side by side with deface 1.5.0 and the plain x264 floor, same run.

Input (made from ../shared/data): the street video scaled to 1280x720 and looped to 500 frames (20 s,
6-9 small moving faces a frame), with its audio: the issue's 500-frame 720p clip.

Contenders, each in a process of its own (wall time and peak memory are its own):
  floor          ffmpeg libx264, veryfast, CRF 18 (the issue's floor); floor-superfast: our preset
  deface         deface 1.5.0 with its defaults (CenterFace at full size, blur)
  deface-640     deface with --scale 640x360
  deface-solid, deface-640-solid   the same with --replacewith solid: its detection coverage, apart from blur
  ours           evidence redact with the defaults (its leak check included: CenterFace at 0.75 every 0.2 s;
                 the check's own network time is taken from the report)
  ours-check-0.5 the same with the leak check at 0.5 of the width (the masking's own scale): its cost
  ours-fine      evidence redact --set detect_scale=0.75 --set preset=veryfast (slower, finer)

Each output gets the leak audit of the tests (YuNet at full size on every frame, score >= 0.5; the
crest window above the entrance, which is not a face, set aside). Recall on the 43 labelled faces
(share of boxes at least 90% covered by the mask) for ours and for deface (with --replacewith solid,
so its mask can be measured the same way). Peak memory on a long 1080p input (--long-minutes).

deface is installed in a throwaway virtual environment, benchmarks/.deface-venv, on first use.

    .venv/bin/python benchmarks/redact.py [--contenders ...] [--long-minutes 10] [--rounds 3]

Writes benchmarks/results/redact-<UTC time>.json and prints frames/s, ratios and leaks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import record

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
SHARED = REPO.parent / "shared" / "data"
DEFACE_VENV = REPO / "benchmarks" / ".deface-venv"
CONTENDERS = ("floor", "floor-superfast", "deface", "deface-640", "ours", "ours-check-0.5", "ours-fine")
EXTRA = ("deface-solid", "deface-640-solid")   # run on request: --contenders deface-solid,...
YUNET = REPO / "models" / "bundled" / "yunet-2023mar" / "model.onnx"
CREST = (880 * 2 / 3, 1150 * 2 / 3, 120 * 2 / 3, 300 * 2 / 3, 70 * 2 / 3)  # the tests' crest window, at 720p


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def deface_bin() -> Path:
    exe = DEFACE_VENV / "bin" / "deface"
    if not exe.exists():
        sh(sys.executable, "-m", "venv", str(DEFACE_VENV))
        sh(str(DEFACE_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "deface==1.5.0")
    return exe


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants: ours runs ffmpeg children beside Python."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in tree)


def timed(args: list[str]) -> dict:
    """Wall time and the peak of the summed resident memory of the contender's processes (sampled)."""
    began = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.2)
    seconds = time.monotonic() - began
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {stderr[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1), "stdout": stdout}


def command(name: str, source: Path, out: Path, *, solid: bool = False) -> list[str]:
    evidence = [str(REPO / ".venv" / "bin" / "evidence"), "redact", str(source), "--out", str(out), "--json"]
    if name.startswith("floor"):
        preset = "superfast" if name == "floor-superfast" else "veryfast"
        return ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-c:v", "libx264", "-preset", preset,
                "-crf", "18", "-threads", "2", "-c:a", "copy", str(out)]
    if name.startswith("deface"):
        args = [str(deface_bin()), str(source), "-o", str(out), "--keep-audio"]
        args += ["--scale", "640x360"] if name.startswith("deface-640") else []
        return args + (["--replacewith", "solid"] if solid or name.endswith("-solid") else [])
    if name == "ours":
        return evidence
    if name == "ours-fine":
        return evidence + ["--set", "detect_scale=0.75", "--set", "preset=veryfast"]
    if name == "ours-check-0.5":
        return evidence + ["--set", "leak_scale=0.5"]
    raise ValueError(name)


def leaks(path: Path, work: Path) -> list[dict]:
    from pipelines.pipeline import DEFAULT_TOOLS
    from pipelines.redact import audit

    x0, x1, y0, y1, side = CREST
    found = audit.leaks(path, YUNET, DEFAULT_TOOLS, work, min_score=0.5)
    return [f for f in found if not (x0 <= f["box"][0] <= x1 and y0 <= f["box"][1] <= y1
                                     and max(f["box"][2:]) < side)]


def recall(name: str, work: Path) -> dict:
    """Share of the 43 labelled boxes at least 90% covered by the contender's mask colour."""
    import cv2
    import numpy as np

    from pipelines.pipeline import DEFAULT_TOOLS
    from pipelines.redact import masks, video

    fill = np.array((0, 0, 0) if name.startswith("deface") else masks._FILL_BGR, dtype=np.int16)
    work.mkdir(parents=True, exist_ok=True)
    covered = total = 0
    for xml in ("training.xml", "testing.xml"):
        for image in ET.parse(SHARED / "faces" / xml).getroot().iter("image"):
            photo = SHARED / "faces" / image.get("file")
            clip = work / f"{photo.stem}.mp4"
            if not clip.exists():
                sh("ffmpeg", "-v", "error", "-y", "-loop", "1", "-i", str(photo), "-t", "0.4", "-r", "25", "-vf",
                   "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0", "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p",
                   str(clip))
            if name.startswith("deface"):
                out = work / f"{name}-{photo.stem}.png"
                sh(*command(name, photo, out, solid=True))
                frame = cv2.imread(str(out))
            else:
                out = work / f"{name}-{photo.stem}.mp4"
                sh(*command(name, clip, out))
                frames = [f.image for f in video.frames(out, DEFAULT_TOOLS, work / "recall.log")]
                frame = frames[len(frames) // 2]
            for box in image.iter("box"):
                x, y, w, h = (int(box.get(k)) for k in ("left", "top", "width", "height"))
                region = frame[y:y + h, x:x + w].astype(np.int16)
                total += 1
                covered += float(np.mean(np.all(np.abs(region - fill) <= 14, axis=2))) >= 0.9
    return {"covered": covered, "boxes": total, "recall": round(covered / total, 3)}


def assessed(name: str, out: Path, run: dict, frames: int, work: Path, with_recall: bool) -> dict:
    """A contender's output: leaks by the audit, its own leak check's figures (ours), recall if asked."""
    entry = {"frames": frames, "peak_rss_mb": run["peak_rss_mb"]}
    report = out.with_name(out.stem + ".redaction-report.json")
    if report.exists():   # ours: what its own leak check cost and found
        entry["leak_check"] = {k: v for k, v in json.loads(report.read_text())["leak_check"].items() if k != "hits"}
    found = leaks(out, work)
    entry["leaks"] = {"boxes": len(found), "frames": len({f["frame"] for f in found}), "first": found[:10]}
    if with_recall and name in ("deface", "deface-640", "ours", "ours-fine"):
        entry["labelled_recall"] = recall(name, work / f"recall-{name}")
    recalled = entry.get("labelled_recall", {}).get("recall", "-")
    print(f"{name:11s} {frames / run['seconds']:7.2f} frames/s  {run['seconds']:7.2f} s  "
          f"peak {entry['peak_rss_mb']:7.1f} MB  leaks {entry['leaks']['boxes']} boxes on "
          f"{entry['leaks']['frames']} frames  recall {recalled}", flush=True)
    return entry


def frame_count(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(out.stdout.strip().split(",")[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--long-minutes", type=float, default=1.0,
                        help="length of the 1080p input for the memory measurement (the issue asks 10)")
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every contender this many times, in turns; times are the medians")
    args = parser.parse_args()
    wanted = [c for c in args.contenders.split(",") if c]
    os.environ.setdefault("EVIDENCE_HOME", tempfile.mkdtemp(prefix="bench-home-"))
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "input": "street-walkers-1080p.mp4 scaled to 1280x720, looped to 500 frames (20 s)",
        "contenders": {}}
    with tempfile.TemporaryDirectory(prefix="bench-redact-") as tmp:
        work = Path(tmp)
        source = work / "street-720p.mp4"
        sh("ffmpeg", "-v", "error", "-y", "-stream_loop", "4", "-i", str(SHARED / "video" / "street-walkers-1080p.mp4"),
           "-vf", "scale=1280:720", "-frames:v", "500", "-c:v", "libx264", "-preset", "veryfast", "-crf", "16",
           "-c:a", "aac", "-shortest", str(source))
        frames = frame_count(source)
        # Round after round, every contender in turn: neighbours in time share the machine's moods, so the
        # ratios of each round and the medians over rounds say more than one run of each.
        times: dict[str, list[float]] = {name: [] for name in wanted}
        for round_number in range(args.rounds):
            for name in wanted:
                out = work / f"{name}-{round_number}.mp4"
                run = timed(command(name, source, out))
                times[name].append(run["seconds"])
                if round_number:
                    print(f"{name:11s} round {round_number + 1}: {run['seconds']:7.2f} s", flush=True)
                else:   # the output's leaks and recall, once
                    results["contenders"][name] = assessed(name, out, run, frames, work, not args.skip_recall)
        for name, entry in results["contenders"].items():
            median = statistics.median(times[name])
            entry.update({"seconds": round(median, 2), "frames_per_s": round(frames / median, 2),
                          "rounds_s": [round(t, 2) for t in times[name]]})
        speed = {n: e["frames_per_s"] for n, e in results["contenders"].items()}
        pairs = [(a, b) for a in ("ours", "ours-check-0.5", "ours-fine")
                 for b in ("deface", "deface-640", "floor", "floor-superfast") if a in speed and b in speed]
        results["ratios"] = {f"{a}/{b}": round(speed[a] / speed[b], 2) for a, b in pairs}   # of the medians
        results["ratios_by_round"] = {f"{a}/{b}": [round(tb / ta, 2) for ta, tb in zip(times[a], times[b],
                                                                                       strict=True)]
                                      for a, b in pairs}
        if "ours" in wanted and args.long_minutes > 0:
            long = work / "long-1080p.mp4"
            loops = int(args.long_minutes * 60 / 4.2) + 1
            sh("ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i",
               str(SHARED / "video" / "street-walkers-1080p.mp4"), "-t", str(args.long_minutes * 60), "-c:v", "libx264",
               "-preset", "ultrafast", "-c:a", "aac", str(long))
            run = timed(command("ours", long, work / "long-out.mp4"))
            results["long_1080p"] = {"minutes": args.long_minutes, "seconds": run["seconds"],
                                     "peak_rss_mb": run["peak_rss_mb"],
                                     "frames_per_s": round(frame_count(long) / run["seconds"], 2)}
            print(f"long 1080p  {args.long_minutes:g} min: {run['seconds']} s, peak {run['peak_rss_mb']} MB")
    print(json.dumps({"median": results["ratios"], "by round": results["ratios_by_round"]}))
    record.save("redact", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
