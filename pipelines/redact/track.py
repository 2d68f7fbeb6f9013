"""Detections linked into tracks, and the boxes to mask on every frame, gaps and margins included.

A face the detector finds on frames 10 and 14 was there on 11 to 13 too: a
track carries it across missed frames with a constant-velocity prediction,
and the masks are laid over the whole span, plus ``pad`` frames before the
first detection and after the last (the whole file is known, so both ways).
Where a mask is interpolated or coasting, it is never smaller than the last
box the detector was sure of. Only boxes are kept, never frames.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.redact.detect import Box

_MATCH_IOU = 0.1            # a detection continues a track when it overlaps the prediction this much
_MATCH_DISTANCE = 0.8       # ... or when its centre is this many box sizes from the predicted centre
_MERGE_IOU = 0.3            # two boxes of one frame this close are the same face (ensemble, tiles)
_COAST_GROWTH = 0.03        # a coasting mask grows by this share of its size a frame, up to twice the size


@dataclass
class Track:
    number: int
    frames: list[int] = field(default_factory=list)      # frames where the detector found the face
    boxes: list[Box] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def velocity(self, at_end: bool) -> tuple[float, float]:
        """Centre motion in pixels a frame between the two detections at one end of the track."""
        if len(self.frames) < 2:
            return 0.0, 0.0
        (fa, a), (fb, b) = ((self.frames[-2], self.boxes[-2]), (self.frames[-1], self.boxes[-1])) if at_end \
            else ((self.frames[0], self.boxes[0]), (self.frames[1], self.boxes[1]))
        steps = max(fb - fa, 1)
        return (_cx(b) - _cx(a)) / steps, (_cy(b) - _cy(a)) / steps


def _cx(box: Box) -> float:
    return (box.x0 + box.x1) / 2


def _cy(box: Box) -> float:
    return (box.y0 + box.y1) / 2


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def union(a: Box, b: Box) -> Box:
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1), max(a.score, b.score))


def merge_same_faces(boxes: Sequence[Box]) -> list[Box]:
    """Boxes of one frame with overlapping ones replaced by their union (bigger is the safe side)."""
    merged: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        for i, kept in enumerate(merged):
            if iou(box, kept) > _MERGE_IOU:
                merged[i] = union(kept, box)
                break
        else:
            merged.append(box)
    return merged


def _shifted(box: Box, dx: float, dy: float, grow: float = 0.0) -> Box:
    gx, gy = box.width * grow / 2, box.height * grow / 2
    return Box(box.x0 + dx - gx, box.y0 + dy - gy, box.x1 + dx + gx, box.y1 + dy + gy, box.score)


def _corners(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=np.float64).reshape(-1, 4)


def match_scores(predicted: Sequence[Box], boxes: Sequence[Box]) -> np.ndarray:
    """How well each box continues each track predicted at ``predicted`` (tracks x boxes); 0: not at all.

    Overlap counts first (1 + IoU); a box that does not overlap enough but
    lies close to the prediction and is about as big (a fast or jerky face)
    still matches, with less. Computed for all pairs at once: a busy street
    has dozens of live tracks on every frame.
    """
    p, b = _corners(predicted)[:, None, :], _corners(boxes)[None, :, :]
    ix = np.clip(np.minimum(p[..., 2], b[..., 2]) - np.maximum(p[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(p[..., 3], b[..., 3]) - np.maximum(p[..., 1], b[..., 1]), 0, None)
    p_area = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    b_area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    inter = ix * iy
    overlap = inter / np.maximum(p_area + b_area - inter, 1e-9)
    size = np.maximum(np.maximum(p[..., 2] - p[..., 0], p[..., 3] - p[..., 1]),
                      np.maximum(np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]), 1.0))
    distance = np.hypot((p[..., 0] + p[..., 2] - b[..., 0] - b[..., 2]) / 2,
                        (p[..., 1] + p[..., 3] - b[..., 1] - b[..., 3]) / 2) / size
    ratio = b_area / np.maximum(p_area, 1.0)
    near = (distance < _MATCH_DISTANCE) & (ratio > 0.5) & (ratio < 2.0)
    return np.where(overlap >= _MATCH_IOU, 1.0 + overlap, np.where(near, 1.0 - distance, 0.0))


class Linker:
    """Feeds on the detections of one frame after another; ``tracks`` holds every track made."""

    def __init__(self, max_gap: int):
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self._active: list[Track] = []

    def cut(self) -> None:
        """A new shot starts: no face of the last one continues into it."""
        self._active = []

    def add(self, frame: int, boxes: Sequence[Box]) -> list[tuple[Track, Box]]:
        """Links this frame's boxes to tracks (new ones where none continues); each box with its track."""
        self._active = [t for t in self._active if frame - t.last <= self.max_gap + 1]
        predicted = []
        for track in self._active:
            vx, vy = track.velocity(at_end=True)
            gap = frame - track.last
            predicted.append(_shifted(track.boxes[-1], vx * gap, vy * gap))
        candidates = []
        if predicted and boxes:
            scores = match_scores(predicted, boxes)
            candidates = [(float(scores[ti, bi]), int(ti), int(bi)) for ti, bi in zip(*np.nonzero(scores > 0),
                                                                                     strict=True)]
        taken_tracks, taken_boxes = set(), set()
        assigned = []
        for _score, ti, bi in sorted(candidates, reverse=True):
            if ti in taken_tracks or bi in taken_boxes:
                continue
            taken_tracks.add(ti)
            taken_boxes.add(bi)
            self._active[ti].frames.append(frame)
            self._active[ti].boxes.append(boxes[bi])
            assigned.append((self._active[ti], boxes[bi]))
        for bi, box in enumerate(boxes):
            if bi not in taken_boxes:
                track = Track(len(self.tracks) + 1, [frame], [box])
                self.tracks.append(track)
                self._active.append(track)
                assigned.append((track, box))
        return assigned


def box_at(track: Track, frame: int, pad: int) -> Box | None:
    """The box to mask for ``track`` on ``frame``: detected, filled in, or coasting; None outside its span."""
    if frame < track.first - pad or frame > track.last + pad:
        return None
    i = bisect.bisect_left(track.frames, frame)
    if i < len(track.frames) and track.frames[i] == frame:
        return track.boxes[i]
    if i == 0:  # before the first detection: run the motion backwards, grow, keep the first box
        return _coasting(track.boxes[0], track.velocity(at_end=False), track.first - frame, backwards=True)
    if i == len(track.frames):
        return _coasting(track.boxes[-1], track.velocity(at_end=True), frame - track.last, backwards=False)
    before, after = track.boxes[i - 1], track.boxes[i]
    t = (frame - track.frames[i - 1]) / (track.frames[i] - track.frames[i - 1])
    cx, cy = _cx(before) + t * (_cx(after) - _cx(before)), _cy(before) + t * (_cy(after) - _cy(before))
    half_w = max(before.width, after.width) / 2
    half_h = max(before.height, after.height) / 2
    return Box(cx - half_w, cy - half_h, cx + half_w, cy + half_h, min(before.score, after.score))


def _coasting(anchor: Box, velocity: tuple[float, float], steps: int, backwards: bool) -> Box:
    sign = -1 if backwards else 1
    grow = min(_COAST_GROWTH * steps, 1.0)
    moved = _shifted(anchor, sign * velocity[0] * steps, sign * velocity[1] * steps, grow)
    return union(anchor, moved)


def lag(pad: int, max_gap: int) -> int:
    """Frames the linker must have seen past a frame before that frame's masks are final.

    A face first found ``pad`` frames later is masked on it already, and the
    way that face is run backwards takes its second detection, up to
    ``max_gap`` + 1 frames after its first; a face seen before it and missed
    on it is filled in from its next detection, at most ``max_gap`` + 1 frames
    on, or has ended. Whatever comes later changes nothing on this frame.
    """
    return pad + max_gap + 1


def masks(tracks: Sequence[Track], pad: int,
          unmasked: Mapping[int, Sequence[tuple[int, int]]] | None = None) -> Iterator[list[tuple[int, Box]]]:
    """For each frame in order, from the first, the (track number, box) pairs to mask on it; ``unmasked``:
    by track number, the stretches (first, last frame) of it left showing (the staff policy's cleared strangers).

    ``tracks`` are in the order of their first frames, as the linker makes
    them, and may be the linker's own list while it still grows: a frame's
    masks are then final once the linker has taken ``lag`` frames past it.
    """
    unmasked = unmasked or {}

    def showing(track: Track, frame: int) -> bool:
        return any(first <= frame <= last for first, last in unmasked.get(track.number, ()))

    active: list[Track] = []
    nxt = 0
    for frame in itertools.count():
        while nxt < len(tracks) and tracks[nxt].first - pad <= frame:
            active.append(tracks[nxt])
            nxt += 1
        active = [t for t in active if t.last + pad >= frame]
        yield [(t.number, box) for t in active
               if not showing(t, frame) and (box := box_at(t, frame, pad)) is not None]
