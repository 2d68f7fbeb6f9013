"""Recall by face size: how small a face the redact step's detector finds, at 720p, 1080p and 4K.

The 43 labelled faces of ../shared/data/faces are cut out (with their hair and a margin), scaled so that
the labelled box is 16 to 48 px high, and pasted on a grid into frames of each resolution whose background
is the street video, blurred until it holds no face. The detector runs as the step runs it: the frame
scaled to the detection size that `detect_scale` and `tiles` give (redact.detect.detection_size), boxes
scaled back. By default the frame is then blurred a little and JPEG-compressed (quality 40), as field
footage is; --sharp leaves it clean. A pasted face counts as found when a box's centre lies inside its
labelled box. Settings compared: the defaults (detect_scale 0.5, tiles 1), detect_scale 1, and tiles 2;
YuNet at the step's min_score (0.15).

    .venv/bin/python benchmarks/small_faces.py [--sizes 16,20,24,32,40,48]

Writes benchmarks/results/small-faces-<UTC time>.json and prints recall per resolution, size and setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}
SETTINGS = {"default (scale 0.5)": (0.5, 1), "scale 1": (1.0, 1), "tiles 2": (0.5, 2)}


def labelled_faces() -> list:
    """Each labelled face with a margin of half its size, and where the labelled box lies in the crop."""
    import cv2

    faces = []
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(SHARED / "faces" / name).getroot().iter("image"):
            photo = cv2.imread(str(SHARED / "faces" / image.get("file")))
            for box in image.iter("box"):
                x, y, w, h = (int(box.get(k)) for k in ("left", "top", "width", "height"))
                m = max(w, h) // 2
                x0, y0 = max(x - m, 0), max(y - m, 0)
                crop = photo[y0:y + h + m, x0:x + w + m]
                faces.append((crop, (x - x0, y - y0, w, h)))
    return faces


def background(size: tuple[int, int]):
    import cv2

    from pipelines.pipeline import DEFAULT_TOOLS
    from pipelines.redact import video

    with tempfile.TemporaryDirectory() as scratch:
        frames = video.frames(SHARED / "video" / "street-walkers-1080p.mp4", DEFAULT_TOOLS,
                              Path(scratch) / "decode.log", size=size)
        image = next(frames).image
        frames.close()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=size[0] / 60)


def frames_with_faces(size: tuple[int, int], face_px: int, faces: list, base, degraded: bool):
    """Frames of ``size`` with every face pasted at ``face_px`` high, on a grid; (frame, boxes) pairs."""
    import cv2

    cell = face_px * 4
    columns, rows = size[0] // cell, size[1] // cell
    per_frame = max(columns * rows, 1)
    for first in range(0, len(faces), per_frame):
        frame, boxes = base.copy(), []
        for slot, (crop, (bx, by, bw, bh)) in enumerate(faces[first:first + per_frame]):
            scale = face_px / bh
            scaled = cv2.resize(crop, (max(int(crop.shape[1] * scale), 1), max(int(crop.shape[0] * scale), 1)),
                                interpolation=cv2.INTER_AREA)
            x, y = (slot % columns) * cell + cell // 4, (slot // columns) * cell + cell // 4
            h, w = min(scaled.shape[0], size[1] - y), min(scaled.shape[1], size[0] - x)
            frame[y:y + h, x:x + w] = scaled[:h, :w]
            boxes.append((x + bx * scale, y + by * scale, bw * scale, bh * scale))
        if degraded:  # as field footage gives them: a little soft, and compressed
            frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=0.8)
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 40])
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
        yield frame, boxes


def recall(size, face_px, faces, base, scale, tiles, paths, degraded) -> tuple[int, int, float]:
    import cv2

    from pipelines.redact import detect

    detector = detect.Detector(detect.networks("yunet", paths, 0.15), tiles=tiles)
    found = total = 0
    spent = 0.0
    target = detect.detection_size(size[0], size[1], scale, tiles)
    for frame, boxes in frames_with_faces(size, face_px, faces, base, degraded):
        began = time.perf_counter()
        small = frame if target == size else cv2.resize(frame, target, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / small.shape[1], size[1] / small.shape[0]
        hits = [b.scaled(fx, fy) for b in detector(small)]
        spent += time.perf_counter() - began
        for x, y, w, h in boxes:
            total += 1
            found += any(x <= (b.x0 + b.x1) / 2 <= x + w and y <= (b.y0 + b.y1) / 2 <= y + h for b in hits)
    return found, total, spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,20,24,32,40,48")
    parser.add_argument("--sharp", action="store_true", help="paste the faces as they are (default: blurred a "
                                                              "little and JPEG-compressed at quality 40)")
    args = parser.parse_args()
    from models.registry import Registry
    from pipelines.redact.spec import MODEL_NAMES

    registry = Registry()
    paths = {kind: registry.load(name).path / "model.onnx" for kind, name in MODEL_NAMES.items()}
    faces = labelled_faces()
    rows = []
    for res, size in RESOLUTIONS.items():
        base = background(size)
        for face_px in (int(s) for s in args.sizes.split(",")):
            for setting, (scale, tiles) in SETTINGS.items():
                found, total, spent = recall(size, face_px, faces, base, scale, tiles, paths, not args.sharp)
                row = {"resolution": res, "face_px": face_px, "setting": setting, "found": found, "faces": total,
                       "recall": round(found / total, 3), "detect_s_per_frame": round(spent / -(-total // max(
                           (size[0] // (face_px * 4)) * (size[1] // (face_px * 4)), 1)), 3)}
                rows.append(row)
                print(f"{res:<6} {face_px:>3} px  {setting:<20} recall {row['recall']:.3f} ({found}/{total})  "
                      f"{row['detect_s_per_frame']} s/frame", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"small-faces-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"benchmark": "small-faces", "when": datetime.now(timezone.utc).isoformat(),
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "detector": "yunet, min_score 0.15", "faces": "sharp" if args.sharp else
                               "blurred (sigma 0.8) and JPEG quality 40", "results": rows}, indent=2) + "\n")
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
