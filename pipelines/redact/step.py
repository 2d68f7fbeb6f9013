"""The redact step: ``redacted.mp4``, the video with every face masked, and its report.

Two passes over the recording. The first decodes small frames, detects
faces and links them into tracks (boxes only are kept). The second decodes
full frames again, masks each with the boxes of its tracks (gaps filled,
margins added before and after) and encodes it with its original timestamp.
The audio is then copied in, packet for packet, and nothing of the original's
metadata is carried over. A frame that cannot be decoded fails the step: a
video with an unchecked frame is never written.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from array import array
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines import ffmpeg_cli
from pipelines.errors import MaskingLeak, RejectedInput
from pipelines.pipeline import StepContext, StepResult
from pipelines.redact import audit, detect, masks, report, shots, staff, track, video
from pipelines.redact.spec import MODEL_NAMES, OTHER_FAMILY, STAFF_MODEL, model_names

# Frames detected side by side in the first pass, at most (each detector thread holds its own networks).
_MOST_DETECTING = 4


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
    estimate = _frame_estimate(ctx)
    began = time.monotonic()

    # Pass 1: detect and link. Under the staff policy the matcher needs full-size faces, so frames come
    # in at full size and are scaled down here; otherwise ffmpeg scales them (cheaper).
    size = detect.detection_size(*display, p["detect_scale"], p["tiles"]) if display else None
    scaled_by_ffmpeg = size if size and size != (width, height) and matcher is None else None
    linker = track.Linker(p["max_gap_frames"])
    cuts = shots.Cuts()
    pts = array("q")
    time_base = None
    # A file may declare a short duration and hold hours of frames; the probe's limits rest on what it declares.
    most_frames = int(estimate * 1.5) + 250

    def pictures():
        """Each frame with the picture a person sees and the one the detector gets, in decoding order."""
        for frame in video.frames(ctx.original, ctx.tools, ctx.workdir / "decode-1.log", scaled_by_ffmpeg):
            if frame.index >= most_frames:
                raise RejectedInput(f"the video holds more than {most_frames} frames, far more than its declared "
                                    f"duration and frame rate give (about {estimate}): refused as misleading")
            image = frame.image
            full = (width, height) if scaled_by_ffmpeg else (image.shape[1], image.shape[0])
            seen = small = image   # seen: the whole picture as a person sees it; small: what the detector gets
            if not scaled_by_ffmpeg:
                if sar != 1:
                    seen = small = cv2.resize(image, _square_pixels(*full, sar), interpolation=cv2.INTER_LINEAR)
                if size and size != (seen.shape[1], seen.shape[0]):
                    small = cv2.resize(seen, size, interpolation=cv2.INTER_AREA)
            yield (frame, full, seen, small), small

    for (frame, (full_w, full_h), seen, small), found in detections(pictures()):
        fx, fy = full_w / small.shape[1], full_h / small.shape[0]
        boxes = track.merge_same_faces([b.scaled(fx, fy) for b in found])   # in stored pixels
        if cuts(small):
            linker.cut()
        assigned = linker.add(frame.index, boxes)
        if matcher is not None:
            sx, sy = seen.shape[1] / full_w, seen.shape[0] / full_h
            matcher.observe(frame.index, float(frame.pts * frame.time_base), seen,
                            [(t, b.scaled(sx, sy)) for t, b in assigned])
        pts.append(frame.pts)
        time_base = frame.time_base
        width, height = full_w, full_h
        _progress(ctx, frame.index + 1, estimate)
    detect_s = time.monotonic() - began
    frame_count = len(pts)
    tracks = linker.tracks
    showing: dict[int, list[tuple[int, int]]] = {}   # the staff policy's cleared stretches, by track
    if matcher is not None:
        showing = matcher.decide(tracks, lambda index: float(pts[index] * time_base))
    masked = {t.number: showing.get(t.number) != [(t.first, t.last)] for t in tracks}
    to_mask = [t for t in tracks if masked[t.number]]

    # Pass 2: mask every frame and encode it with its own timestamp.
    began_render = time.monotonic()
    rng = np.random.default_rng()
    silent = ctx.workdir / "video-only.mp4"
    encoder = None
    rendered = 0
    masked_frames = 0
    other = OTHER_FAMILY[p["detector"]]
    check = audit.LeakCheck(lambda: detect.networks(other, paths, audit.CHECK_MIN_SCORE, 1)[0],
                            display or (width, height), p["leak_scale"], p["leak_every_s"], shape=p["shape"],
                            mask_scale=p["mask_scale"], workers=workers)
    shown = _shown_boxes(tracks, showing)
    try:
        plans = track.masks(to_mask, frame_count, p["pad_frames"], showing)
        # Planar 4:2:0 straight through when the sides allow it: no colour conversion either way.
        planar = width % 2 == 0 and height % 2 == 0
        pix_fmt, shape = (video.I420, (height * 3 // 2, width)) if planar else (video.BGR, (height, width, 3))
        for frame in video.frames(ctx.original, ctx.tools, ctx.workdir / "decode-2.log", pix_fmt=pix_fmt):
            if frame.index >= frame_count or frame.pts != pts[frame.index] or frame.image.shape != shape:
                raise RejectedInput("the video decoded differently the second time (frame "
                                    f"{frame.index}): refusing to write frames that were not checked")
            if encoder is None:
                encoder = video.Encoder(silent, width, height, frame.time_base, ctx.tools, crf=p["crf"],
                                        preset=p["preset"], log=ctx.workdir / "encode.log", pix_fmt=pix_fmt,
                                        sar=sar)
            regions = [box for _number, box in next(plans)]
            masks.draw(frame.image, regions, shape=p["shape"], style=p["style"], scale=p["mask_scale"], rng=rng)
            masked_frames += bool(regions)
            seconds = float(frame.pts * frame.time_base)
            if check.due(seconds):
                check.submit(frame.index, seconds, frame.image, planar, regions, shown(frame.index))
                # A run that fails on a leak keeps no video: the first leak found ends it.
                if p["leak_check"] == "fail" and check.found_any():
                    raise MaskingLeak(f"{_leak_said(other, check.finish())} (looking stopped at the first): "
                                      f"{_LEAK_FAILED}")
            encoder.write(frame.pts, frame.image)
            rendered += 1
            _progress(ctx, frame_count + rendered, frame_count)
        if rendered != frame_count:
            raise RejectedInput(f"the video gave {rendered} frames the second time and {frame_count} the first: "
                                "refusing to write a video whose frames were not all checked")
        encoder.close()
        hits = check.finish()
    except BaseException:
        check.close()
        if encoder is not None:
            encoder.abort()
        raise
    audio = video.mux_audio(silent, ctx.original, out, ctx.tools, voice=p["voice"])
    silent.unlink(missing_ok=True)
    total_s = time.monotonic() - began
    render_s = time.monotonic() - began_render

    moments = report.review_moments(to_mask, pts, time_base, width, height, p["pad_frames"])
    if matcher is not None:  # a cleared stretch is where a wrong decision would show a staff member's face
        moments = report.merged(moments + report.cleared_moments(showing, pts, time_base), tracks)
    moments = sorted(moments + report.leak_moments(hits), key=lambda m: (m["start_s"], m["tracks"]))
    leak_facts = {"detector": other, "scale": p["leak_scale"], "every_s": p["leak_every_s"],
                  "frames_checked": check.frames_checked, "faces_found": len(hits), "passed": not hits,
                  "network_s": round(check.busy_s, 2)}
    facts = {
        "policy": p["policy"], "detector": p["detector"], "frames": frame_count, "width": width, "height": height,
        "tracks": len(tracks), "tracks_masked": len(to_mask), "frames_with_masks": masked_frames,
        "review_moments": len(moments), "audio": audio, "voice": p["voice"], "shot_cuts": cuts.count,
        "frames_per_s": round(frame_count / total_s, 2) if total_s else None, "leak_check": leak_facts,
    }
    if matcher is not None:
        facts["staff"] = matcher.counts()
    body = {
        "schema": report.SCHEMA, "settings": dict(p), **facts,
        "speed": {"detect_frames_per_s": round(frame_count / detect_s, 2) if detect_s else None,
                  "render_frames_per_s": round(frame_count / render_s, 2) if render_s else None,
                  "seconds": round(total_s, 2)},
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
            raise MaskingLeak(f"{_leak_said(other, hits)}: {_LEAK_FAILED}")
        warnings.append(f"{_leak_said(other, hits)}: kept for review; export will not release this run")
    return {"facts": facts, "warnings": warnings, "report_path": report_path,
            "models": {name: model.record() for name, model in installed.items()}}


_LEAK_FAILED = ("the masked video was not kept. Reprocess with stricter masking (--set redact.detector=ensemble, "
                "or a higher redact.detect_scale), or with --set redact.leak_check=review to keep it for a person "
                "to check (never released)")


def _leak_said(detector: str, hits: list[dict]) -> str:
    at = ", ".join(f"{m['start_s']:.1f} s" for m in report.leak_moments(hits)[:5])
    return f"the leak check ({detector}) found {len(hits)} face(s) showing after masking, at {at}"


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


def _progress(ctx: StepContext, done: int, frames: int) -> None:
    """Both passes as one bar: ``frames`` is the estimate in the first pass, the true count in the second."""
    if ctx.progress and done % 25 == 0:
        ctx.progress(min(done, 2 * frames), 2 * frames)
