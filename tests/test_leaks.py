"""Leaks the masking must not leave: the redact step's own leak check on a weakly masked video, and faces
of about 20 px in 4K footage under the defaults, the networks its threads make, and the step's YuNet held to
OpenCV's. On real media, with the real detectors."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import cv2
import numpy as np
import pytest
from support import REPO, ffmpeg
from test_redact import YUNET, _leaks, decoded, labelled_boxes, masked_share, run_redact

from models.registry import Registry
from pipelines.errors import MaskingLeak
from pipelines.redact import audit, detect


@pytest.mark.slow
def test_the_leak_check_fails_a_weakly_masked_video_or_lists_its_faces_for_review(shared_data, tmp_path):
    """Masking at a detection threshold of 0.95 leaves most faces showing: the check, with the other detector
    family, must catch them where a person can find them, and the independent audit must confirm them.
    The street video's first second (25 frames, 6-9 faces each) is enough."""
    source = shared_data / "video" / "street-walkers-1080p.mp4"
    second = tmp_path / "first-second.mp4"
    ffmpeg("-i", str(source), "-t", "1", "-c:v", "libx264", "-crf", "16", "-an", str(second))
    with pytest.raises(MaskingLeak, match=r"the leak check \(centerface\) found \d+ face\(s\) showing"):
        run_redact(second, tmp_path / "fail", min_score=0.95)
    review = run_redact(second, tmp_path / "review", min_score=0.95, leak_check="review", leak_every_s=0.0)
    check = review["facts"]["leak_check"]
    assert not check["passed"] and check["faces_found"] > 0 and check["frames_checked"] == review["facts"]["frames"]
    assert any("export will not release this run" in w for w in review["warnings"])
    body = json.loads(review["files"]["redaction-report.json"].read_text())
    hits = body["leak_check"]["hits"]
    moments = [m for m in body["review"] if "the leak check found a face showing after masking" in m["reasons"]]
    assert moments and all(m["face_px"][0] > 0 for m in moments)
    # The hits are faces: YuNet, at full size on the same frames, finds a face where most of them are.
    audited = _leaks(review["files"]["redacted.mp4"], tmp_path)
    confirmed = [h for h in hits if any(a["frame"] == h["frame"] and _overlap(a["box"], h["box"]) for a in audited)]
    assert len(confirmed) >= 0.5 * len(hits), (len(confirmed), len(hits))


def _overlap(a: list[int], b: list[int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.slow
def test_faces_of_about_20_px_are_masked_in_4k_under_the_defaults(shared_data, tmp_path):
    """Rule: the detection scale follows the resolution, so the smallest face found is about 20 px in the
    original whatever its size. Six labelled faces, scaled to 22-26 px high, on a 3840x2160 picture."""
    boxes = labelled_boxes(shared_data / "faces")
    canvas = np.full((2160, 3840, 3), 90, dtype=np.uint8)
    canvas[:] = cv2.GaussianBlur(np.random.default_rng(7).integers(40, 200, canvas.shape, dtype=np.uint8), (0, 0), 3)
    placed = []
    for index, (name, faces) in enumerate(sorted(boxes.items())[:6]):
        photo = cv2.imread(str(shared_data / "faces" / name))
        x, y, w, h = faces[0]
        margin = max(w, h) // 2
        crop = photo[max(y - margin, 0):y + h + margin, max(x - margin, 0):x + w + margin]
        height = 22 + index % 3 * 2
        scale = height / h
        small = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        left, top = 400 + index * 560, 700 + index % 2 * 600
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
        fx, fy = left + round((x - max(x - margin, 0)) * scale), top + round((y - max(y - margin, 0)) * scale)
        placed.append((fx, fy, round(w * scale), height))
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), canvas)
    clip = tmp_path / "4k.mp4"
    ffmpeg("-loop", "1", "-i", str(still), "-t", "0.2", "-r", "25", "-c:v", "libx264", "-crf", "8",
           "-pix_fmt", "yuv420p", str(clip))
    result = run_redact(clip, tmp_path / "work")
    for frame in decoded(result["files"]["redacted.mp4"], tmp_path):
        shares = [round(masked_share(frame, *box), 2) for box in placed]
        assert min(shares) >= 0.9, (placed, shares)


def test_networks_made_on_several_threads_at_once_all_load(tmp_path):
    """Detector and leak-check threads make their networks at the same moment, in a process that has not
    read the ONNX graph format yet (the masking's own process): every one of them must load."""
    centerface = Registry().load("centerface").path / "model.onnx"
    code = ("import sys\nfrom concurrent.futures import ThreadPoolExecutor\nfrom pipelines.redact import detect\n"
            "with ThreadPoolExecutor(4) as pool:\n"
            "    made = list(pool.map(lambda _: detect.CenterFace(sys.argv[1], 0.5, 1), range(4)))\n"
            "print(len(made))\n")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code, str(centerface)], capture_output=True, text=True,
                              cwd=REPO, timeout=120)
        assert done.returncode == 0 and done.stdout.split() == ["4"], done.stderr[-2000:]


def test_the_steps_yunet_finds_the_boxes_opencv_finds_with_the_same_network(shared_data, tmp_path):
    """The step runs YuNet in onnxruntime with its own decoding of the network's grids; the audit runs it in
    OpenCV's FaceDetectorYN. On street frames at three sizes (odd sides among them) and the labelled photos,
    at the step's low threshold, every box of one has its twin in the other."""
    frames = decoded(shared_data / "video" / "street-walkers-1080p.mp4", tmp_path)[::21]
    images = [cv2.imread(str(p)) for p in sorted((shared_data / "faces").glob("*.jpg"))]
    for frame in frames:
        images += [frame, cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA), cv2.resize(frame, (333, 187))]
    ours, opencv = detect.YuNet(YUNET, 0.15, 1), audit.OpenCVYuNet(YUNET, 0.15)
    compared = 0
    for image in images:
        mine, theirs = ours(image), opencv(image)
        assert len(mine) == len(theirs), image.shape
        for box in theirs:
            assert max(_iou(box, other) for other in mine) > 0.99, (image.shape, box)
            assert min(abs(box.score - other.score) for other in mine) < 0.01
        compared += len(theirs)
    assert compared > 300   # the street frames alone hold 6-9 faces each, and more at this threshold


def _iou(a: detect.Box, b: detect.Box) -> float:
    w, h = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
    common = max(w, 0) * max(h, 0)
    return common / (a.width * a.height + b.width * b.height - common)


@pytest.mark.parametrize("rate", [Fraction(25), Fraction(30000, 1001), Fraction(24), Fraction(50), Fraction(5)])
def test_the_leak_check_looks_at_least_every_fifth_of_a_second_whatever_the_frame_rate(rate):
    """The check looks at the first frame, then at the first frame at or after 0.2 s of media time past the
    last one it looked at: never a whole frame later than that (at 25 frames/s, exactly every fifth frame).
    Timestamps as the decoder gives them: pts times the time base, in float seconds."""
    check = audit.LeakCheck(lambda: None, (640, 360), 0.75, 0.2, shape="ellipse", mask_scale=2.0)
    time_base = Fraction(1, 90000) if rate.denominator != 1 else 1 / rate
    times = [float(round(i / rate / time_base) * time_base) for i in range(int(rate * 60))]
    checked = [t for t in times if check.due(t)]
    frame_s = float(1 / rate)
    assert checked[0] == 0.0
    assert max(b - a for a, b in zip(checked, checked[1:], strict=False)) < 0.2 + frame_s - 1e-9
    assert len(checked) <= 60 / max(0.2, frame_s) * 1.05 + 1   # and not every frame where that is not needed
    check.close()
