"""Leak checks: a second look at masked frames, for any face left showing.

In the redact step, ``LeakCheck`` looks at the masked frames themselves, as
they go to the encoder, at least every 0.2 s of media time. It uses the
other detector family than the one that made the masks (a miss of one
network is seldom a miss of another built differently), on the picture a
person sees, at a finer scale than the masking saw. Compression cannot
uncover a masked face, so the frames before encoding are the frames of the
output; looking at them costs no third decode.

``leaks`` is the whole-file audit of the tests and benchmarks: YuNet at full
size on every frame of a finished video, run by OpenCV's own FaceDetectorYN,
an implementation apart from the step's (``detect.YuNet``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np

from pipelines.pipeline import Tools
from pipelines.redact import detect, masks, video

# Measured on masked street footage (500 frames of 720p, 6-9 faces a frame): CenterFace finds nothing at 0.5
# or more on the defaults' output, and 471 faces in 100 checked frames of a run masked at min_score 0.95.
CHECK_MIN_SCORE = 0.5
# A solid or noisy ellipse is itself face-shaped to a detector: a find mostly under the masks drawn on that
# frame is the detector seeing a mask. A face with more than this share hidden shows no more than a sliver.
_MASKED_SHARE = 0.6
_SLACK_S = 1e-6  # far under a frame's duration at any rate a camera records
_PENDING = 3     # frames waiting for each checking thread: bounds memory, keeps the encoder busy meanwhile


class LeakCheck:
    """Faces the masking left showing in a video's masked frames, looked for on threads of their own.

    Each thread has its own single-threaded network and takes whole frames:
    on cores the decoder and the encoder share, a network that splits each
    layer across threads waits for whichever of them was pushed aside.
    """

    def __init__(self, make_network: Callable[[], Callable], display: tuple[int, int], scale: float,
                 every_s: float, *, shape: str, mask_scale: float, workers: int = 1):
        self._networks = detect.PerThread(make_network)
        self._mask = {"shape": shape, "scale": mask_scale}
        self.size = detect.detection_size(*display, scale, 1)
        self.every_s = every_s
        self._next_s: float | None = None
        self._pool = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="leak-check")
        self._most_pending = _PENDING * max(workers, 1)
        self._pending: deque[Future] = deque()
        self.frames_checked = 0
        self.busy_s = 0.0      # the checking threads' time in the network, summed: what the check costs
        self._busy_lock = threading.Lock()
        self.hits: list[dict] = []

    def due(self, seconds: float) -> bool:
        """Whether the frame at ``seconds`` is one to check: the first, then one at least every ``every_s``."""
        # Sums of float seconds drift (0.4 + 0.2 is a little over 0.6): without the slack, every third check
        # at 25 frames/s would come a frame late, 0.24 s after the one before.
        if self._next_s is not None and self._next_s - self.every_s <= seconds < self._next_s - _SLACK_S:
            return False   # a timestamp that went back (a damaged file) is checked: never a stretch unlooked-at
        self._next_s = seconds + self.every_s
        return True

    def submit(self, index: int, seconds: float, image: np.ndarray, pix_fmt: str,
               masked: Sequence[detect.Box] = (), shown: Sequence[detect.Box] = ()) -> None:
        """Check the masked frame ``image`` (``video.I420`` or ``video.BGR``, stored pixels), on which the
        faces ``masked`` were masked. Faces inside ``shown`` (boxes the policy means to leave visible) are
        not leaks. Boxes are in stored pixels. The frame must not change once given."""
        small = video.picture(image, pix_fmt, self.size)
        width = image.shape[1]
        height = image.shape[0] * 2 // 3 if pix_fmt == video.I420 else image.shape[0]
        fx, fy = width / self.size[0], height / self.size[1]
        while len(self._pending) >= self._most_pending:
            self._collect(self._pending.popleft())
        self._pending.append(self._pool.submit(self._look, index, seconds, small, fx, fy, tuple(masked),
                                               tuple(shown)))
        self.frames_checked += 1

    def _look(self, index: int, seconds: float, small: np.ndarray, fx: float, fy: float,
              masked: tuple[detect.Box, ...], shown: tuple[detect.Box, ...]) -> list[dict]:
        found = []
        network = self._networks.get()
        began = time.perf_counter()
        boxes = network(small)
        with self._busy_lock:
            self.busy_s += time.perf_counter() - began
        for box in boxes:
            box = box.scaled(fx, fy)
            if box.score >= CHECK_MIN_SCORE and not any(_inside(box, s) for s in shown) \
                    and masks.covered(box, masked, **self._mask) < _MASKED_SHARE:
                found.append({"frame": index, "seconds": round(seconds, 3), "box": _xywh(box),
                              "score": round(box.score, 3)})
        return found

    def found_any(self) -> bool:
        """Whether a frame checked so far showed a face (frames still being checked are not waited for)."""
        while self._pending and self._pending[0].done():
            self._collect(self._pending.popleft())
        return bool(self.hits)

    def _collect(self, future: Future) -> None:
        self.hits += future.result()

    def finish(self) -> list[dict]:
        """Every leak found, in frame order, once all submitted frames are checked."""
        try:
            while self._pending:
                self._collect(self._pending.popleft())
        finally:
            self._pool.shutdown(cancel_futures=True)
        return self.hits

    def close(self) -> None:
        """Stop without waiting for the results (the step failed for another reason)."""
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _inside(box: detect.Box, shown: detect.Box) -> bool:
    """Whether ``box``'s centre lies within ``shown`` grown by half its size (a shown face, found again)."""
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    gx, gy = shown.width / 2, shown.height / 2
    return shown.x0 - gx <= cx <= shown.x1 + gx and shown.y0 - gy <= cy <= shown.y1 + gy


def _xywh(box: detect.Box) -> list[int]:
    return [round(box.x0), round(box.y0), round(box.width), round(box.height)]


def leaks(path: Path, model: Path, tools: Tools, workdir: Path, *, min_score: float = 0.5,
          display: tuple[int, int] | None = None, frames: int | None = None) -> list[dict]:
    """Every face YuNet finds at ``min_score`` or more in ``path``: frame, box (x, y, w, h) and score.

    ``display``: the size of the picture a person sees, where pixels are not
    square (anamorphic video); boxes are then in that picture's pixels.
    ``frames``: look at that many first frames only.
    """
    network = OpenCVYuNet(model, min_score)
    found = []
    with closing(video.frames(path, tools, workdir / "audit-decode.log", size=display)) as decoded:
        for frame in decoded:
            if frames is not None and frame.index >= frames:
                break
            for box in network(frame.image):
                found.append({"frame": frame.index, "box": _xywh(box), "score": round(box.score, 3)})
    return found


class OpenCVYuNet:
    """YuNet as OpenCV's FaceDetectorYN runs it, its input size following the frames'."""

    def __init__(self, model: Path, min_score: float):
        self._model = str(model)
        self._min_score = min_score
        self._size: tuple[int, int] | None = None
        self._net = None

    def __call__(self, image: np.ndarray) -> list[detect.Box]:
        size = (image.shape[1], image.shape[0])
        if self._net is None:
            self._net = cv2.FaceDetectorYN.create(self._model, "", size, self._min_score, 0.3, 5000)
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, found = self._net.detect(image)
        if found is None:
            return []
        return [detect.Box(float(x), float(y), float(x + w), float(y + h), float(s))
                for x, y, w, h, s in found[:, [0, 1, 2, 3, 14]]]
