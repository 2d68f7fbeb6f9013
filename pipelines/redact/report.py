"""What the redaction report says: each track, and the moments a person should check.

Coverage is uncertain where a track ends (or starts) away from the frame's
edge, before the recording ends: the face may have turned away from the
detector rather than left the picture. Also where a track's detections
flicker (long gaps that tracking filled) and where a face is so small that
the detector scores it poorly, and where an unsure detection masks much of
the picture. Those time ranges, one per track and stretch with the face's
size, are the review moments. Tracks are numbered; no name ever appears here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from pipelines.redact.track import Track

SCHEMA = "evidence-worker/redaction-report/1"
_EDGE = 0.04                # of the frame's side: a box this close to the edge may have left the picture
_FLICKER_GAP = 3            # missed frames in a row inside a track that make its coverage worth a look
_SMALL_PX = 24              # faces smaller than this (shorter side, original pixels) score unreliably
_MARGIN_S = 0.5             # added around each review moment
_LARGE = 0.4                # of the frame's shorter side: a box this big masks much of the picture ...
_UNSURE = 0.3               # ... and said at a score this low, it is worth a look


def _seconds(pts: Sequence[int], time_base: Fraction, frame: int) -> float:
    frame = min(max(frame, 0), len(pts) - 1)
    return round(float(pts[frame] * time_base), 3)


def _near_edge(box, width: int, height: int) -> bool:
    return (box.x0 < width * _EDGE or box.y0 < height * _EDGE or box.x1 > width * (1 - _EDGE)
            or box.y1 > height * (1 - _EDGE))


def review_moments(tracks: Sequence[Track], pts: Sequence[int], time_base: Fraction, width: int,
                   height: int, pad: int) -> list[dict[str, Any]]:
    """One moment per track and stretch a person should look at, with its times and the face's size."""
    found: list[tuple[float, float, str, int]] = []
    last_frame = len(pts) - 1

    def add(first: int, last: int, reason: str, number: int) -> None:
        start = max(_seconds(pts, time_base, first) - _MARGIN_S, 0.0)
        found.append((start, _seconds(pts, time_base, last) + _MARGIN_S, reason, number))

    for track in tracks:
        if track.last + pad < last_frame and not _near_edge(track.boxes[-1], width, height):
            add(track.last, track.last + pad, "a face track ends inside the picture", track.number)
        if track.first - pad > 0 and not _near_edge(track.boxes[0], width, height):
            add(track.first - pad, track.first, "a face track starts inside the picture", track.number)
        for before, after in zip(track.frames, track.frames[1:], strict=False):
            if after - before > _FLICKER_GAP:
                add(before, after, "detection flickered; tracking filled the gap", track.number)
        small = [f for f, b in zip(track.frames, track.boxes, strict=True) if min(b.width, b.height) < _SMALL_PX]
        if small:
            add(small[0], small[-1], "a face too small to score well", track.number)
        large = [(f, b) for f, b in zip(track.frames, track.boxes, strict=True)
                 if max(b.width, b.height) > _LARGE * min(width, height) and b.score < _UNSURE]
        if large:
            side = round(max(max(b.width, b.height) for _, b in large))
            add(large[0][0], large[-1][0], f"an unsure detection ({side} px) masks a large part of the picture: safe, "
                                           "but check it is a face", track.number)
    return _merged(found, {t.number: t for t in tracks})


def staff_moments(showing: Mapping[int, Sequence[tuple[int, int]]], changes: Mapping[int, Sequence[tuple[int, int]]],
                  pts: Sequence[int], time_base: Fraction) -> list[dict[str, Any]]:
    """Under the staff policy, for a person to confirm: each stretch of a face left unmasked because the
    matcher found no one enrolled in it, and each place where a track's face became someone else's."""
    said = [(number, first, last, "left unmasked: compared with the enrolled staff every 0.2 s and matched no one")
            for number, stretches in showing.items() for first, last in stretches]
    said += [(number, first, last, "the face became someone else's without a cut: masked across the change")
             for number, found in changes.items() for first, last in found]
    return [{"start_s": _seconds(pts, time_base, first), "end_s": _seconds(pts, time_base, last),
             "reasons": [reason], "tracks": [number]} for number, first, last, reason in said]


def leak_moments(hits: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The leak check's finds, hits less than a second apart joined, with the face's size: each is a face
    showing in the masked video."""
    moments: list[dict[str, Any]] = []
    for hit in sorted(hits, key=lambda h: h["seconds"]):
        side = min(hit["box"][2], hit["box"][3])
        if moments and hit["seconds"] - moments[-1]["end_s"] < 1.0:
            moment = moments[-1]
            moment["end_s"] = hit["seconds"]
            moment["face_px"] = [min(moment["face_px"][0], side), max(moment["face_px"][1], side)]
            if len(moment["boxes"]) < 5:   # where to look; the report's leak_check lists every hit
                moment["boxes"].append(hit["box"])
            continue
        moments.append({"start_s": hit["seconds"], "end_s": hit["seconds"], "tracks": [],
                        "reasons": ["the leak check found a face showing after masking"],
                        "face_px": [side, side], "boxes": [hit["box"]]})
    return moments


def merged(moments: list[dict[str, Any]], tracks: Sequence[Track] = ()) -> list[dict[str, Any]]:
    """Moments of one track that overlap joined into one, their reasons together."""
    return _merged([(m["start_s"], m["end_s"], reason, number) for m in moments for reason in m["reasons"]
                    for number in m["tracks"]], {t.number: t for t in tracks})


def _merged(found: list[tuple[float, float, str, int]], tracks: Mapping[int, Track]) -> list[dict[str, Any]]:
    # Per track: one moment naming a hundred tracks on a street scene is one nobody can act on.
    moments: list[dict[str, Any]] = []
    last: dict[int, dict[str, Any]] = {}
    for start, end, reason, number in sorted(found, key=lambda item: (item[3], item[0], item[1])):
        moment = last.get(number)
        if moment and start <= moment["end_s"]:
            moment["end_s"] = max(moment["end_s"], round(end, 3))
            if reason not in moment["reasons"]:
                moment["reasons"].append(reason)
            continue
        moment = {"start_s": round(start, 3), "end_s": round(end, 3), "reasons": [reason], "tracks": [number]}
        if number in tracks:
            sides = [min(b.width, b.height) for b in tracks[number].boxes]
            moment["face_px"] = [round(min(sides)), round(max(sides))]
        moments.append(moment)
        last[number] = moment
    return sorted(moments, key=lambda m: (m["start_s"], m["tracks"]))


def track_entries(tracks: Sequence[Track], pts: Sequence[int], time_base: Fraction, pad: int,
                  masked: dict[int, bool]) -> list[dict[str, Any]]:
    entries = []
    for track in tracks:
        span = track.last - track.first + 1
        scores = [b.score for b in track.boxes]
        entries.append({
            "track": track.number,
            "first_frame": track.first, "last_frame": track.last,
            "first_s": _seconds(pts, time_base, track.first), "last_s": _seconds(pts, time_base, track.last),
            "frames_detected": len(track.frames), "frames_filled": span - len(track.frames), "pad_frames": pad,
            "score_min": round(min(scores), 3), "score_max": round(max(scores), 3),
            "smallest_px": round(min(min(b.width, b.height) for b in track.boxes), 1),
            "masked": masked.get(track.number, True),
        })
    return entries


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
