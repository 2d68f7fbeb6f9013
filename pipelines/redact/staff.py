"""Recognising enrolled staff, failing closed: a face is left unmasked only when it is clearly someone else.

dlib's ResNet turns an aligned face into 128 numbers; two faces of one
person lie closer than about 0.6 (measured here 0.17-0.42 for the same
person, 0.57-0.95 for others). A track's faces are compared at least every
0.2 s of media time over its whole life (a track can pass from one person to
another who steps into the same place; tracks end at shot cuts, and are split
where the face becomes someone else's). Any sample that matches an enrolled
person masks the whole track; of the others, only the stretches between
comparisons of one person that found a face big, sharp and frontal enough and
no one enrolled stay unmasked. Names never reach this module:
only embeddings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from pipelines.errors import StepError
from pipelines.redact.detect import Box
from pipelines.redact.track import Track

SAMPLE_S = 0.2              # every face is compared at least this often, in media time (not frames)
FRONTAL = (0.3, 0.7)        # nose tip between the outer eye corners, as a share of their distance
MIN_CLEARING_SAMPLES = 2    # comparable faces a track needs before it can be cleared
MIN_FACE_PX = 40            # shorter side: smaller faces cannot be compared reliably
MIN_SHARPNESS = 20.0        # variance of the Laplacian of the face at 150 px: below, too blurred to compare
_SHARPNESS_SIDE = 150


class NobodyEnrolled(StepError):
    """The staff policy with nobody enrolled: every face would be compared with nothing."""

    retryable = False


class Embedder:
    def __init__(self, folder: Path):
        import dlib  # dlib-bin; only the staff policy and enrolment need it

        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image: np.ndarray, box: Box) -> np.ndarray | None:
        """The face's 128-d embedding, or None when the face is too small or too blurred to compare."""
        height, width = image.shape[:2]
        x0, y0 = max(int(box.x0), 0), max(int(box.y0), 0)
        x1, y1 = min(int(box.x1), width), min(int(box.y1), height)
        if min(x1 - x0, y1 - y0) < MIN_FACE_PX:
            return None
        grey = cv2.resize(cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY), (_SHARPNESS_SIDE, _SHARPNESS_SIDE),
                          interpolation=cv2.INTER_AREA)  # the same measure for a face of any size
        if cv2.Laplacian(grey, cv2.CV_64F).var() < MIN_SHARPNESS:
            return None
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        shape = self._shape(rgb, self._dlib.rectangle(x0, y0, x1, y1))
        left, right, nose = shape.part(36).x, shape.part(45).x, shape.part(30).x
        if right - left <= 0 or not FRONTAL[0] <= (nose - left) / (right - left) <= FRONTAL[1]:
            return None  # a face turned away matches nobody well, which must not clear it
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32)


def roster_digest(roster: Sequence[np.ndarray]) -> str:
    """A hash of every enrolled embedding: a run's result depends on who was enrolled."""
    digest = hashlib.sha256()
    for person in roster:
        digest.update(np.ascontiguousarray(person, dtype=np.float32).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


class _Sample(NamedTuple):
    frame: int
    seconds: float
    stranger: bool | None   # None: the face could not be compared (too small, blurred, turned away)
    jump: bool              # comparable, and someone else than the track's last comparable face


class Matcher:
    """Compares every face of each track with the roster at least every SAMPLE_S of media time, then decides
    which stretches of which tracks may stay unmasked.

    Fail closed: a track is masked whole once any of its faces matches
    someone enrolled. Of the rest, a track is split where its face becomes
    someone else's (two comparable faces in a row further apart than the
    match distance: one person stepping into another's place), and a stretch
    stays unmasked only between two comparisons of one part that found no
    one enrolled and are at most SAMPLE_S apart (and after the last, when the
    track ends within SAMPLE_S of it). A comparison the quality gate refuses
    (small, blurred, turned away), a stretch the detector lost for longer,
    and the stretch across a change of person mask.
    """

    def __init__(self, folder: Path, roster: Sequence[np.ndarray], distance: float):
        if not roster:
            raise NobodyEnrolled("redact.policy is staff but nobody is enrolled: enrol staff with 'evidence staff "
                                 "enroll NAME PHOTO...' or use redact.policy=all")
        self.embedder = Embedder(folder)
        self.roster = [np.atleast_2d(np.asarray(person, dtype=np.float32)) for person in roster]
        self.distance = distance
        self.matched: set[int] = set()
        self.samples: dict[int, list[_Sample]] = {}
        self._last_face: dict[int, np.ndarray] = {}   # by track: its last comparable face's embedding

    def observe(self, frame: int, seconds: float, image: np.ndarray, assigned: Sequence[tuple[Track, Box]]) -> None:
        for track, box in assigned:
            number = track.number
            taken = self.samples.setdefault(number, [])
            if number in self.matched or (taken and seconds - taken[-1].seconds < SAMPLE_S - 1e-6):
                continue
            embedding = self.embedder.embed(image, box)
            jump = False
            if embedding is not None:
                if self._matches(embedding):
                    self.matched.add(number)
                    self._last_face.pop(number, None)
                else:
                    last = self._last_face.get(number)
                    jump = last is not None and float(np.linalg.norm(last - embedding)) >= self.distance
                    self._last_face[number] = embedding
            taken.append(_Sample(frame, seconds, None if embedding is None else number not in self.matched, jump))

    def _matches(self, embedding: np.ndarray) -> bool:
        return any(float(np.min(np.linalg.norm(person - embedding, axis=1))) < self.distance
                   for person in self.roster)

    def decide(self, tracks: Sequence[Track], seconds: Callable[[int], float]) -> dict[int, list[tuple[int, int]]]:
        """Track number -> the stretches (first, last frame) that stay unmasked; an empty list masks it all."""
        self.outcome: dict[int, str] = {}
        self._last_face.clear()   # every track has ended
        found: dict[int, list[tuple[int, int]]] = {}
        for track in tracks:
            stretches: list[tuple[int, int]] = []
            parts = _parts(self.samples.get(track.number, []))
            for part in parts if track.number not in self.matched else []:
                if sum(bool(s.stranger) for s in part) < MIN_CLEARING_SAMPLES:
                    continue
                stretches += [(a.frame, b.frame) for a, b in zip(part, part[1:], strict=False)
                              if a.stranger and b.stranger and b.seconds - a.seconds <= SAMPLE_S + 1e-6]
                end = part[-1]
                if part is parts[-1] and end.stranger and end.frame < track.last \
                        and seconds(track.last) - end.seconds <= SAMPLE_S + 1e-6:
                    stretches.append((end.frame, track.last))
            found[track.number] = _joined(stretches)
            self.outcome[track.number] = "matched" if track.number in self.matched else \
                "cleared" if found[track.number] else "not clearable"
        return found

    def changes(self) -> dict[int, list[tuple[int, int]]]:
        """Track number -> where its face became someone else's: (frame of the last comparison of the one,
        frame of the first of the other), masked between."""
        found: dict[int, list[tuple[int, int]]] = {}
        for number, samples in self.samples.items():
            parts = _parts(samples)
            if len(parts) > 1:
                found[number] = [(before[-1].frame, after[0].frame) for before, after in zip(parts, parts[1:],
                                                                                              strict=False)]
        return found

    def counts(self) -> dict[str, int]:
        found = {"matched": 0, "not clearable": 0, "cleared": 0}
        for outcome in self.outcome.values():
            found[outcome] += 1
        return {"tracks_matched_staff": found["matched"], "tracks_masked_uncertain": found["not clearable"],
                "tracks_cleared": found["cleared"],
                "changes_of_person": sum(map(len, self.changes().values()))}


def _parts(samples: list[_Sample]) -> list[list[_Sample]]:
    """A track's samples split where its face becomes someone else's: each part is one person's."""
    parts: list[list[_Sample]] = []
    for sample in samples:
        if not parts or sample.jump:
            parts.append([])
        parts[-1].append(sample)
    return parts


def _joined(stretches: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for first, last in stretches:
        if out and first <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


class EnrolmentError(StepError):
    retryable = False


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) a PNG's header or a JPEG's frame header declares; (0, 0) when none is found.

    Read before any decoder sees the picture: OpenCV's own pixel limit is
    read once, when it is first imported, and whoever imported it first
    decides whether it holds.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) if len(data) >= 24 else (0, 0)
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return 0, 0
        marker = data[at + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:   # markers with no length
            at += 2
            continue
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # a frame header: SOF0 to SOF15
            header = data[at + 5:at + 9]
            return (int.from_bytes(header[2:4], "big"), int.from_bytes(header[0:2], "big")) if len(header) == 4 \
                else (0, 0)
        if marker == 0xDA or length < 2:   # image data before any frame header: not a picture to trust
            return 0, 0
        at += 2 + length
    return 0, 0


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_MAX_PHOTO_PIXELS = 50_000_000   # OpenCV's own limit, where it holds, is set in pipelines/__init__.py
_ENROL_SCORE = 0.6
_ENROL_WIDTH = 1280
_VIDEO_SAMPLES = 10


def enrolment_embeddings(paths: Sequence[Path], detector_model: Path, embedder_folder: Path, tools,
                         workdir: Path) -> list[np.ndarray]:
    """One embedding per photo, or per sampled frame of a video; each must show exactly one face.

    A photo with no face or several is an error naming it, and nothing is
    enrolled: enrolling the wrong face would leave a staff member unmasked.
    """
    from pipelines.redact import detect, video

    finder = detect.YuNet(detector_model, _ENROL_SCORE)
    embedder = Embedder(embedder_folder)

    def faces(image: np.ndarray) -> list[Box]:
        scale = min(1.0, _ENROL_WIDTH / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        return [b.scaled(1 / scale, 1 / scale) for b in finder(small)]

    found: list[np.ndarray] = []
    for path in paths:
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            image = _read_photo(path)
            if image is None:
                raise EnrolmentError(f"{path.name}: not an image OpenCV can read")
            boxes = faces(image)
            if len(boxes) != 1:
                raise EnrolmentError(f"{path.name}: {len(boxes)} faces found; a photo for enrolment must show "
                                     "exactly one face (crop it to the person)")
            embedding = embedder.embed(image, boxes[0])
            if embedding is None:
                raise EnrolmentError(f"{path.name}: the face is too small or too blurred to enrol")
            found.append(embedding)
            continue
        sampled = []
        for frame in video.frames(path, tools, workdir / "enrol-decode.log"):
            if frame.index % 5:
                continue
            boxes = faces(frame.image)
            if len(boxes) > 1:
                raise EnrolmentError(f"{path.name}: frame {frame.index} shows {len(boxes)} faces; a video for "
                                     "enrolment must show the one person alone")
            if boxes and (embedding := embedder.embed(frame.image, boxes[0])) is not None:
                sampled.append(embedding)
        if not sampled:
            raise EnrolmentError(f"{path.name}: no face big and sharp enough to enrol")
        step = max(len(sampled) // _VIDEO_SAMPLES, 1)
        found += sampled[::step][:_VIDEO_SAMPLES]
    return found


def _read_photo(path: Path) -> np.ndarray:
    """A JPEG or PNG photo, checked by its first bytes before OpenCV decodes it in this process.

    OpenCV decodes by content, whatever the name says (TIFF, JPEG 2000, HDR...);
    only the two formats a phone or camera gives are let through, and OpenCV
    refuses a picture over 50 megapixels before allocating it (the limit is
    set when this module is imported, before any decoding).
    """
    data = path.read_bytes()
    if not data.startswith(_IMAGE_MAGIC):
        raise EnrolmentError(f"{path.name}: not a JPEG or PNG photo (convert it, or enrol from a video)")
    width, height = declared_size(data)
    if width * height > _MAX_PHOTO_PIXELS or not width or not height:
        raise EnrolmentError(f"{path.name}: the photo declares {width}x{height} pixels; more than "
                             f"{_MAX_PHOTO_PIXELS} are not decoded (scale it down first)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise EnrolmentError(f"{path.name}: the photo cannot be decoded (damaged, or over "
                             f"{_MAX_PHOTO_PIXELS} pixels)")
    return image
