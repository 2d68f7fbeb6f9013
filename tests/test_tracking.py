"""Tracks and their masks between, before and after detections: the frames a detector misses stay covered."""

from __future__ import annotations

import itertools
import random

from pipelines.redact import report
from pipelines.redact.detect import Box
from pipelines.redact.track import Linker, Track, box_at, lag, masks, merge_same_faces


def _walk(frames, x_step=10.0, size=40.0):
    """A face moving right by ``x_step`` a frame, seen only on ``frames``."""
    return {f: Box(100 + f * x_step, 200, 100 + f * x_step + size, 200 + size, 0.9) for f in frames}


def _link(seen: dict[int, Box], frame_count: int, max_gap: int = 12) -> Linker:
    linker = Linker(max_gap)
    for frame in range(frame_count):
        linker.add(frame, [seen[frame]] if frame in seen else [])
    return linker


def _covers(outer: Box, inner: Box) -> bool:
    return outer.x0 <= inner.x0 and outer.y0 <= inner.y0 and outer.x1 >= inner.x1 and outer.y1 >= inner.y1


def test_a_gap_is_one_track_and_every_missed_frame_is_covered_where_the_face_was():
    truth = _walk(range(30))
    seen = {f: b for f, b in truth.items() if not 10 <= f < 16}  # six frames in a row missed
    linker = _link(seen, 30)
    [track] = linker.tracks
    for frame in range(10, 16):
        assert _covers(box_at(track, frame, pad=0), truth[frame])


def test_masks_start_before_the_first_and_end_after_the_last_detection_and_do_not_shrink():
    seen = _walk(range(20, 30))
    [track] = _link(seen, 60).tracks
    plan = list(itertools.islice(masks([track], pad=8), 60))
    assert [bool(p) for p in plan] == [12 <= f < 38 for f in range(60)]
    for frame in range(30, 38):   # coasting on: never smaller than the last sure box, and still on the face
        [(_number, box)] = plan[frame]
        assert box.width >= seen[29].width and box.height >= seen[29].height
        assert _covers(box, _walk([frame])[frame])


def _crowd(frame_count: int, seed: int) -> dict[int, list[Box]]:
    """Faces coming and going across a street, each missed now and then, some for longer than a track
    survives; by frame."""
    rng = random.Random(seed)
    seen: dict[int, list[Box]] = {f: [] for f in range(frame_count)}
    for _face in range(60):
        start = rng.randrange(frame_count)
        x, y, size = rng.uniform(0, 1800), rng.uniform(0, 1000), rng.uniform(12, 120)
        vx, vy = rng.uniform(-6, 6), rng.uniform(-2, 2)
        for frame in range(start, min(start + rng.randrange(5, 200), frame_count)):
            if rng.random() < 0.75 or frame == start:
                at_x, at_y = x + vx * (frame - start), y + vy * (frame - start)
                seen[frame].append(Box(at_x, at_y, at_x + size, at_y + size, rng.uniform(0.15, 1)))
        if rng.random() < 0.1:
            for frame in range(start + 3, min(start + 3 + rng.randrange(13, 20), frame_count)):
                seen[frame] = [b for b in seen[frame] if b.x0 != x + vx * (frame - start)]
    return seen


def _masks_while_linking(seen: dict[int, list[Box]], pad: int, max_gap: int, waited: int, cuts=()):
    """Each frame's masks, taken ``waited`` frames after the linker took that frame; and the linker."""
    linker = Linker(max_gap)
    live = masks(linker.tracks, pad)
    taken = []
    for frame in range(len(seen)):
        if frame in cuts:
            linker.cut()
        linker.add(frame, seen[frame])
        while len(taken) <= frame - waited:
            taken.append(next(live))
    while len(taken) < len(seen):
        taken.append(next(live))
    return taken, linker


def test_masks_taken_while_the_linker_runs_are_those_of_the_finished_tracks_once_it_is_lag_frames_ahead():
    # The redact step masks and encodes each frame a few frames behind the detection, in one decoding
    # of the video: what it masks must be what the whole video's tracks would have masked there.
    for seed in range(3):
        seen = _crowd(600, seed)
        for pad, max_gap in ((8, 12), (0, 0), (20, 3)):
            taken, linker = _masks_while_linking(seen, pad, max_gap, lag(pad, max_gap), cuts={150, 151, 400})
            after = list(itertools.islice(masks(linker.tracks, pad), len(seen)))
            assert taken == after, (seed, pad, max_gap)
            assert sum(map(len, after)) > 2000
    # One frame less is not enough: a face first found pad frames on, whose second detection is
    # max_gap + 1 frames after its first, is run backwards with a motion not yet known.
    pad, max_gap = 8, 12
    face = {f: [Box(2.0 * f, 100, 2.0 * f + 40, 140, 0.9)] for f in (30, 30 + max_gap + 1)}
    seen = {f: face.get(f, []) for f in range(80)}
    early, linker = _masks_while_linking(seen, pad, max_gap, lag(pad, max_gap) - 1)
    assert early != list(itertools.islice(masks(linker.tracks, pad), 80))
    on_time, _ = _masks_while_linking(seen, pad, max_gap, lag(pad, max_gap))
    assert on_time == list(itertools.islice(masks(linker.tracks, pad), 80))


def test_two_faces_stay_two_tracks_and_a_far_jump_starts_a_new_one():
    linker = Linker(12)
    for frame in range(10):
        linker.add(frame, [Box(100, 100, 140, 140, 0.9), Box(600, 100, 640, 140, 0.9)])
    linker.add(10, [Box(1000, 500, 1040, 540, 0.9)])
    assert len(linker.tracks) == 3


def test_overlapping_boxes_of_one_face_are_merged_into_their_union():
    merged = merge_same_faces([Box(0, 0, 10, 10, 0.9), Box(1, 1, 11, 11, 0.5), Box(50, 50, 60, 60, 0.7)])
    assert sorted((b.x0, b.y0, b.x1, b.y1) for b in merged) == [(0, 0, 11, 11), (50, 50, 60, 60)]


def test_review_moments_name_tracks_that_end_inside_the_picture():
    [track] = _link(_walk(range(20, 30)), 100).tracks
    moments = report.review_moments([track], list(range(0, 100 * 40, 40)), 1 / 1000, 1920, 1080, pad=8)
    reasons = {reason for moment in moments for reason in moment["reasons"]}
    assert "a face track ends inside the picture" in reasons and "a face track starts inside the picture" in reasons
    assert all(m["tracks"] == [1] for m in moments)


def test_review_moments_are_one_per_track_with_sizes_and_say_when_an_unsure_box_masks_much():
    first = _link(_walk(range(20, 30)), 100).tracks[0]
    second = _link(_walk(range(22, 32)), 100).tracks[0]
    second.number = 2
    huge = [Box(100, 100, 900, 900, 0.16) for _ in range(3)]   # 800 px said at 0.16 in a 1920x1080 frame
    third = Track(3, [40, 41, 42], huge)
    moments = report.review_moments([first, second, third], list(range(0, 100 * 40, 40)), 1 / 1000, 1920, 1080,
                                    pad=8)
    assert all(len(m["tracks"]) == 1 for m in moments), "two tracks at the same time stay two moments"
    assert {m["tracks"][0] for m in moments} == {1, 2, 3}
    [big] = [m for m in moments if m["tracks"] == [3]]
    assert big["face_px"] == [800, 800] and any("unsure detection (800 px)" in r for r in big["reasons"])
