"""The redact step: ``redacted.mp4``, the video with every face masked, and its report.

One decoding of the recording. Each frame is detected at a small size and its
faces linked into tracks; a few frames later, once no later frame can change
its masks (``track.lag``), it is masked with the boxes of its tracks (gaps
filled, margins added before and after), leak-checked and encoded with its
original timestamp. The staff policy decides on whole tracks, so it decodes
twice: first to detect, link and compare faces, then to mask. The audio is
then copied in, packet for packet, and nothing of the original's metadata is
carried over. A frame that cannot be decoded fails the step: a video with an
unchecked frame is never kept.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from array import array
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines import ffmpeg_cli
from pipelines.errors import MaskingLeak, RejectedInput
from pipelines.pipeline import StepContext, StepResult
from pipelines.redact import audit, detect, render, report, shots, staff, track, video
from pipelines.redact.spec import MODEL_NAMES, OTHER_FAMILY, STAFF_MODEL, model_names

# Frames detected side by side, at most (each detector thread holds its own networks).
_MOST_DETECTING = 4
# Decoded frames that may wait for their masks in one decoding: 21 frames of 4K take 260 MB under the defaults.
# Beyond (8K, or margins of hundreds of frames), the video is decoded a second time instead.
_MOST_WAITING_BYTES = 512 * 2**20


def fingerprint(ctx: StepContext) -> dict[str, Any]:
    if ctx.models is None:
        raise RuntimeError("the redact step needs the model registry")
    found = {name: dict(ctx.models.load(name).hashes) for name in model_names(ctx.params)}
    if ctx.params["policy"] == "staff":
        found["staff"] = staff.roster_digest(ctx.staff)
    return found


def _skipped(reason: str) -> StepResult:
    return StepResult(facts={"skipped": reason}, warnings=[reason])


def run(ctx: StepContext) -> StepResult:
    p = ctx.params
    probe = ctx.facts.get("probe") or {}
    if not probe.get("has_video", True) or (probe.get("video") is None and "video" in probe):
        return _skipped("the recording has no video stream: nothing to mask (audio-only interview)")
    if p["policy"] == "none":
        return _skipped("redact.policy is none: no masked video was made; the original must not leave as it is")
    result = redact_file(ctx, ctx.workdir / "redacted.mp4")
    return StepResult(
        files={"redacted.mp4": ctx.workdir / "redacted.mp4", "redaction-report.json": result["report_path"]},
        facts=result["facts"], warnings=result["warnings"],
        tools={"ffmpeg": ffmpeg_cli.tool_version(ctx.tools, ctx.tools.ffmpeg),
               "opencv": cv2.__version__, "av": importlib.metadata.version("av")},
        models={name: record for name, record in result["models"].items()},
    )


def redact_file(ctx: StepContext, out: Path) -> dict[str, Any]:
    """Mask ``ctx.original`` into ``out``; the report (also written to the step's folder) and the facts."""
    p = ctx.params
    installed = {name: ctx.models.load(name) for name in model_names(p)}
    paths = {kind: installed[name].path / "model.onnx" for kind, name in MODEL_NAMES.items()
             if name in installed}
    cv2.setNumThreads(max(ctx.tools.cpu_threads, 1) if ctx.tools.cpu_threads else cv2.getNumThreads())
    cores = ctx.tools.cpu_threads or os.cpu_count() or 1
    workers = min(cores, _MOST_DETECTING)
    detections = detect.Ordered(lambda: detect.Detector(
        detect.networks(p["detector"], paths, p["min_score"], max(cores // workers, 1)), tiles=p["tiles"]), workers)
    video_facts = (ctx.facts.get("probe") or {}).get("video") or {}
    width, height = video_facts.get("display_width"), video_facts.get("display_height")
    # Anamorphic video: faces are found in the picture a person sees (pixels made square), and their boxes
    # mapped back to the stored pixels, which are masked and keep their aspect ratio in the output.
    sar = Fraction(video_facts.get("sample_aspect_ratio", "1:1").replace(":", "/"))
    display = _square_pixels(width, height, sar) if width and height else None
    matcher = staff.Matcher(installed[STAFF_MODEL].path, ctx.staff, p["match_distance"]) \
        if p["policy"] == "staff" else None
    size = detect.detection_size(*display, p["detect_scale"], p["tiles"]) if display else None
    tracking = _Tracking(p["max_gap_frames"], matcher)
    other = OTHER_FAMILY[p["detector"]]
    silent = ctx.workdir / "video-only.mp4"

    def renderer(stored: tuple[int, int], shown) -> render.Renderer:
        check = audit.LeakCheck(lambda: detect.networks(other, paths, audit.CHECK_MIN_SCORE, 1)[0],
                                display or stored, p["leak_scale"], p["leak_every_s"], shape=p["shape"],
                                mask_scale=p["mask_scale"], workers=workers)
        return render.Renderer(silent, stored, _pix_fmt(*stored), sar, p, ctx.tools, check, other, shown,
                               ctx.workdir / "encode.log")

    began = time.monotonic()
    lag = track.lag(p["pad_frames"], p["max_gap_frames"])
    # One decoding, each frame masked and encoded lag frames behind its detection, when those frames fit in
    # memory; the staff policy decides on whole tracks, so it decodes a second time once all are known.
    one_pass = matcher is None and size is not None and \
        (lag + detections.held) * _frame_bytes(width, height) <= _MOST_WAITING_BYTES
    showing: dict[int, list[tuple[int, int]]] = {}   # the staff policy's cleared stretches, by track
    if one_pass:
        render_with = renderer((width, height), lambda _frame: [])
        hits = _in_one_pass(ctx, detections, tracking, render_with, sar, size, lag)
    else:
        width, height = _detected(ctx, detections, tracking, (width, height) if display else None, sar, size)
        if matcher is not None:
            showing = matcher.decide(tracking.linker.tracks, tracking.seconds)
        render_with = renderer((width, height), _shown_boxes(tracking.linker.tracks, showing))
        to_mask = [t for t in tracking.linker.tracks if _masked(t, showing)]
        hits = _rendered(ctx, tracking, track.masks(to_mask, p["pad_frames"], showing), render_with)
    audio = video.mux_audio(silent, ctx.original, out, ctx.tools, voice=p["voice"])
    silent.unlink(missing_ok=True)
    total_s = time.monotonic() - began

    tracks, pts, time_base = tracking.linker.tracks, tracking.pts, tracking.time_base
    frame_count = len(pts)
    masked = {t.number: _masked(t, showing) for t in tracks}
    to_mask = [t for t in tracks if masked[t.number]]
    moments = report.review_moments(to_mask, pts, time_base, width, height, p["pad_frames"])
    if matcher is not None:  # a cleared stretch is where a wrong decision would show a staff member's face
        moments = report.merged(moments + report.staff_moments(showing, matcher.changes(), pts, time_base),
                                tracks)
    moments = sorted(moments + report.leak_moments(hits), key=lambda m: (m["start_s"], m["tracks"]))
    check = render_with.check
    leak_facts = {"detector": other, "scale": p["leak_scale"], "every_s": p["leak_every_s"],
                  "frames_checked": check.frames_checked, "faces_found": len(hits), "passed": not hits,
                  "network_s": round(check.busy_s, 2)}
    facts = {
        "policy": p["policy"], "detector": p["detector"], "frames": frame_count, "width": width, "height": height,
        "tracks": len(tracks), "tracks_masked": len(to_mask), "frames_with_masks": render_with.masked_frames,
        "review_moments": len(moments), "audio": audio, "voice": p["voice"], "shot_cuts": tracking.cuts.count,
        "frames_per_s": round(frame_count / total_s, 2) if total_s else None, "leak_check": leak_facts,
    }
    if matcher is not None:
        facts["staff"] = matcher.counts()
    body = {
        "schema": report.SCHEMA, "settings": dict(p), **facts,
        "speed": {"decodings": 1 if one_pass else 2, "seconds": round(total_s, 2)},
        "models": {name: model.record() for name, model in installed.items()},
        "tracks_detail": report.track_entries(tracks, pts, time_base, p["pad_frames"], masked),
        "review": moments,
        "leak_check": {**leak_facts, "size": list(check.size), "min_score": audit.CHECK_MIN_SCORE,
                       "hits": hits[:1000]},   # faces_found counts them all
    }
    report_path = ctx.workdir / "redaction-report.json"
    report_path.write_text(report.dumps(body), encoding="utf-8")
    warnings = [f"{len(moments)} moment(s) where face coverage is uncertain: see redaction-report.json"] \
        if moments else []
    if hits:
        if p["leak_check"] == "fail":
            raise MaskingLeak(f"{render.leak_said(other, hits)}: {render.LEAK_FAILED}")
        warnings.append(f"{render.leak_said(other, hits)}: kept for review; export will not release this run")
    return {"facts": facts, "warnings": warnings, "report_path": report_path,
            "models": {name: model.record() for name, model in installed.items()}}


class _Tracking:
    """What the detection learns, frame after frame: faces linked into tracks that end at shot cuts, each
    frame's timestamp and, under the staff policy, the matcher's samples of every track."""

    def __init__(self, max_gap: int, matcher: staff.Matcher | None):
        self.linker = track.Linker(max_gap)
        self.cuts = shots.Cuts()
        self.matcher = matcher
        self.pts = array("q")
        self.time_base: Fraction | None = None

    def add(self, frame: video.Frame, stored: tuple[int, int], small: np.ndarray, found: list[detect.Box],
            seen: np.ndarray | None = None) -> None:
        """The faces ``found`` in ``small``, the detector's picture of ``frame`` (``stored`` pixels wide and
        high); ``seen``: the picture a person sees, for the matcher."""
        fx, fy = stored[0] / small.shape[1], stored[1] / small.shape[0]
        boxes = track.merge_same_faces([b.scaled(fx, fy) for b in found])   # in stored pixels
        if self.cuts(small):
            self.linker.cut()
        assigned = self.linker.add(frame.index, boxes)
        if self.matcher is not None:
            sx, sy = seen.shape[1] / stored[0], seen.shape[0] / stored[1]
            self.matcher.observe(frame.index, float(frame.pts * frame.time_base), seen,
                                 [(t, b.scaled(sx, sy)) for t, b in assigned])
        self.pts.append(frame.pts)
        self.time_base = frame.time_base

    def seconds(self, index: int) -> float:
        return float(self.pts[index] * self.time_base)


def _decoded(ctx: StepContext, log: str, bar: int, **how) -> Iterator[video.Frame]:
    """The video's frames, refused past far more than its declared duration and frame rate give (a file
    may declare a short duration and hold hours of frames; the probe's limits rest on what it declares).
    ``bar``: how many times its expected frames the progress bar is long."""
    estimate = _frame_estimate(ctx)
    most = int(estimate * 1.5) + 250
    for frame in video.frames(ctx.original, ctx.tools, ctx.workdir / log, **how):
        if frame.index >= most:
            raise RejectedInput(f"the video holds more than {most} frames, far more than its declared "
                                f"duration and frame rate give (about {estimate}): refused as misleading")
        yield frame
        _progress(ctx, frame.index + 1, bar * estimate)


def _pictures(ctx: StepContext, log: str, bar: int, stored: tuple[int, int] | None, sar: Fraction,
              size: tuple[int, int] | None, seen_too: bool) -> Iterator[tuple[tuple, np.ndarray]]:
    """Each frame, decoded at its stored size, with the detector's picture of it: ((frame, stored size, the
    picture a person sees if ``seen_too`` (for the matcher), the detector's), the detector's picture)."""
    pix_fmt = _pix_fmt(*stored) if stored else video.BGR
    for frame in _decoded(ctx, log, bar, pix_fmt=pix_fmt):
        if stored and frame.image.shape != _shape(*stored, pix_fmt):
            raise RejectedInput(f"the video's frames are not the size its probe gave ({stored[0]}x{stored[1]}): "
                                "refusing to mask frames of uncertain size")
        full = stored or (frame.image.shape[1], frame.image.shape[0])
        display = _square_pixels(*full, sar)
        seen = video.picture(frame.image, pix_fmt, display) if seen_too else None
        small = video.picture(frame.image, pix_fmt, size or display) if seen is None \
            else video.picture(seen, video.BGR, size or display)
        yield (frame, full, seen, small), small


def _in_one_pass(ctx: StepContext, detections: detect.Ordered, tracking: _Tracking, render_with: render.Renderer,
                 sar: Fraction, size: tuple[int, int], lag: int) -> list[dict]:
    """Detect, link, mask, check and encode in one decoding; the leaks found."""
    waiting: deque[video.Frame] = deque()
    plans = track.masks(tracking.linker.tracks, ctx.params["pad_frames"])   # final lag frames behind the linker
    try:
        with closing(detections(_pictures(ctx, "decode.log", 1, render_with.size, sar, size, False))) as found:
            for (frame, full, _seen, small), boxes in found:
                tracking.add(frame, full, small, boxes)
                waiting.append(frame)
                if len(waiting) > lag:
                    render_with(waiting.popleft(), [box for _number, box in next(plans)])
        while waiting:
            render_with(waiting.popleft(), [box for _number, box in next(plans)])
        return render_with.finish()
    except BaseException:
        render_with.abort()
        raise


def _detected(ctx: StepContext, detections: detect.Ordered, tracking: _Tracking, stored: tuple[int, int] | None,
              sar: Fraction, size: tuple[int, int] | None) -> tuple[int, int]:
    """The first of two decodings: every frame detected and linked, nothing masked; the stored size."""
    full = stored
    with closing(detections(_pictures(ctx, "decode-1.log", 2, stored, sar, size,
                                      tracking.matcher is not None))) as found:
        for (frame, full, seen, small), boxes in found:
            tracking.add(frame, full, small, boxes, seen)
    return full


def _rendered(ctx: StepContext, tracking: _Tracking, plans: Iterator[list[tuple[int, detect.Box]]],
              render_with: render.Renderer) -> list[dict]:
    """The second decoding: every frame masked as ``plans`` say, checked and encoded; the leaks found."""
    pts = tracking.pts
    shape = _shape(*render_with.size, render_with.pix_fmt)
    try:
        for frame in video.frames(ctx.original, ctx.tools, ctx.workdir / "decode-2.log", pix_fmt=render_with.pix_fmt):
            if frame.index >= len(pts) or frame.pts != pts[frame.index] or frame.image.shape != shape:
                raise RejectedInput("the video decoded differently the second time (frame "
                                    f"{frame.index}): refusing to write frames that were not checked")
            render_with(frame, [box for _number, box in next(plans)])
            _progress(ctx, len(pts) + render_with.rendered, 2 * len(pts))
        if render_with.rendered != len(pts):
            raise RejectedInput(f"the video gave {render_with.rendered} frames the second time and {len(pts)} "
                                "the first: refusing to write a video whose frames were not all checked")
        return render_with.finish()
    except BaseException:
        render_with.abort()
        raise


def _pix_fmt(width: int, height: int) -> str:
    """Planar 4:2:0 straight through when the sides allow it: no colour conversion either way."""
    return video.I420 if width % 2 == 0 and height % 2 == 0 else video.BGR


def _shape(width: int, height: int, pix_fmt: str) -> tuple[int, ...]:
    return (height * 3 // 2, width) if pix_fmt == video.I420 else (height, width, 3)


def _frame_bytes(width: int, height: int) -> int:
    return int(np.prod(_shape(width, height, _pix_fmt(width, height))))


def _masked(t: track.Track, showing: dict[int, list[tuple[int, int]]]) -> bool:
    """Whether the policy masks track ``t`` at all: all but the staff policy's strangers, cleared whole."""
    return showing.get(t.number) != [(t.first, t.last)]


def _shown_boxes(tracks, showing: dict[int, list[tuple[int, int]]]):
    """For a frame index, the boxes of faces the policy leaves showing there (the staff policy's strangers),
    which the leak check does not count as leaks."""
    stretches = [(t, first, last) for t in tracks for first, last in showing.get(t.number, ())]

    def shown(frame: int) -> list[detect.Box]:
        return [box for t, first, last in stretches if first <= frame <= last
                and (box := track.box_at(t, frame, 0)) is not None]
    return shown


def _square_pixels(width: int, height: int, sar: Fraction) -> tuple[int, int]:
    """The size of a picture of ``width`` x ``height`` pixels of aspect ``sar`` once its pixels are square
    (the short side stretched, never a side shrunk), in even numbers."""
    if sar >= 1:
        return max(2, round(width * sar / 2) * 2), height
    return width, max(2, round(height / sar / 2) * 2)


def _frame_estimate(ctx: StepContext) -> int:
    probe = ctx.facts.get("probe") or {}
    rate = ((probe.get("video") or {}).get("avg_frame_rate") or 0)
    return max(int(rate * (probe.get("duration_s") or 0)), 1)


def _progress(ctx: StepContext, done: int, total: int) -> None:
    """One bar for the whole step: with two decodings, ``total`` is twice the frames (estimated in the first)."""
    if ctx.progress and done % 25 == 0:
        ctx.progress(min(done, total), total)
