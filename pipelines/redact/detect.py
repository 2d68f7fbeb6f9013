"""Face detectors: YuNet and CenterFace, both run by onnxruntime.

Both return boxes in the coordinates of the frame they were given. A
detector runs on a downscaled frame for speed; ``tiles`` splits a large
frame into overlapping parts, each at the detection size, so distant faces
in 1080p and 4K footage stay big enough to find. The ensemble runs both and
keeps every box: for masking, a second detector can only add coverage.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import onnxruntime as ort

_TILE_OVERLAP = 0.15        # of a tile's side: a face on a seam is whole in one of the two tiles
T = TypeVar("T")


@dataclass(frozen=True, slots=True)  # hours of footage keep millions of these: no per-box __dict__
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def scaled(self, factor_x: float, factor_y: float, dx: float = 0.0, dy: float = 0.0) -> Box:
        return Box(self.x0 * factor_x + dx, self.y0 * factor_y + dy, self.x1 * factor_x + dx,
                   self.y1 * factor_y + dy, self.score)


class _Sized:
    """One ONNX network in onnxruntime, with a session for each input size it is given.

    The published graphs declare a fixed input size (YuNet 640x640,
    CenterFace 32x32) and CenterFace lists its weights as inputs: each size
    gets a session of its own, from a copy of the graph with that size, the
    weights made constants and the outputs' sizes left to follow the input.
    """

    def __init__(self, model: Path, threads: int):
        self._proto = _model_proto()()
        self._proto.ParseFromString(Path(model).read_bytes())   # neither network keeps external data
        weights = {init.name for init in self._proto.graph.initializer}
        inputs = [i for i in self._proto.graph.input if i.name not in weights]
        del self._proto.graph.input[:]
        self._proto.graph.input.extend(inputs)
        for output in self._proto.graph.output:
            for dim in output.type.tensor_type.shape.dim:
                dim.dim_param = "n"
        self._input = inputs[0].name
        self.outputs = [output.name for output in self._proto.graph.output]
        self._threads = threads
        self._sessions: dict[tuple[int, int], ort.InferenceSession] = {}

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for ``blob`` (1 x 3 x height x width), in the graph's order."""
        size = blob.shape[2:]
        if size not in self._sessions:
            dims = self._proto.graph.input[0].type.tensor_type.shape.dim
            dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, *size
            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle threads that spin take the cores the decoder, the encoder and the other network need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # A block laid out in advance for every tensor of a run held 1.5 GB for CenterFace at 2880x1620
            # (the leak check at 4K), against 0.9 GB from the arena alone, which was no slower at any size.
            options.enable_mem_pattern = False
            self._sessions[size] = ort.InferenceSession(self._proto.SerializeToString(), options,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[size].run(None, {self._input: blob})


class YuNet:
    """YuNet's scores and boxes on grids of stride 8, 16 and 32, turned into boxes.

    The network OpenCV's FaceDetectorYN runs, run here by onnxruntime: twice
    as fast on one thread (6 against 12 ms a 640x360 frame), with the same
    boxes (the tests hold the two to that). As there, the frame is padded
    with black to sides that are multiples of 32, a face's score is the
    geometric mean of its class and object scores, and overlapping boxes are
    suppressed at 0.3 IoU.
    """

    _STRIDES = (8, 16, 32)

    def __init__(self, model: Path, min_score: float, threads: int = 0):
        self._network = _Sized(model, threads)
        self._min_score = min_score
        self._order = {name: i for i, name in enumerate(self._network.outputs)}

    def __call__(self, image: np.ndarray) -> list[Box]:
        blob = _blob(image)
        net_w = blob.shape[3]
        found = self._network(blob)
        boxes: list[Box] = []
        for stride in self._STRIDES:
            cls, obj, bbox = (found[self._order[f"{name}_{stride}"]][0] for name in ("cls", "obj", "bbox"))
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            cells = np.nonzero(score >= self._min_score)[0]
            rows, cols = np.divmod(cells, net_w // stride)
            b = bbox[cells]
            w, h = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            x0, y0 = (cols + b[:, 0]) * stride - w / 2, (rows + b[:, 1]) * stride - h / 2
            boxes += [Box(float(x), float(y), float(x + bw), float(y + bh), float(s))
                      for x, y, bw, bh, s in zip(x0, y0, w, h, score[cells], strict=True)]
        # Whole pixels for the overlaps, as FaceDetectorYN compares them: the same boxes survive.
        return suppress(boxes, 0.3, whole_pixels=True)


def _blob(image: np.ndarray) -> np.ndarray:
    """``image`` (BGR) as both networks take it: 1 x 3 x height x width, float, unscaled, padded with black
    at the right and bottom to sides that are multiples of 32 (the picture is never stretched)."""
    height, width = image.shape[:2]
    blob = np.zeros((1, 3, max(-(-height // 32) * 32, 32), max(-(-width // 32) * 32, 32)), np.float32)
    blob[0, :, :height, :width] = image.transpose(2, 0, 1)
    return blob


class CenterFace:
    """CenterFace's heat map, box sizes and offsets on a stride-4 grid, turned into boxes.

    Run by onnxruntime, about 1.7 times as fast as OpenCV's DNN module here
    (19 against 31 ms a 640x352 frame on 2 cores). The frame is padded to
    sides that are multiples of 32, as for YuNet.
    """

    def __init__(self, model: Path, min_score: float, threads: int = 0):
        self._network = _Sized(model, threads)
        self._min_score = min_score

    def __call__(self, image: np.ndarray) -> list[Box]:
        heat, scale, offset, _landmarks = self._network(_blob(image))
        ys, xs = np.nonzero(heat[0, 0] > self._min_score)
        if len(ys) == 0:
            return []
        box_h = np.exp(scale[0, 0, ys, xs]) * 4
        box_w = np.exp(scale[0, 1, ys, xs]) * 4
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * 4
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * 4
        boxes = [Box(float(x - w / 2), float(y - h / 2), float(x + w / 2), float(y + h / 2), float(s))
                 for x, y, w, h, s in zip(cx, cy, box_w, box_h, heat[0, 0, ys, xs], strict=True)]
        return suppress(boxes, 0.3)


def _model_proto() -> type:
    """ONNX's ModelProto, from the onnx package's generated protobuf module alone. Importing the package
    builds ml_dtypes' number tables first (0.9 s on 2 cores), which every masking run would pay for one
    edit of a graph's declared sizes. Registered under its own name, so a later ``import onnx`` uses it;
    only once whole, and under a lock: detector threads make their networks at the same moment."""
    with _PROTO_LOCK:
        module = sys.modules.get("onnx.onnx_ml_pb2")
        if module is None:
            package = importlib.util.find_spec("onnx")   # locates the package; runs none of it
            if package is None or not package.submodule_search_locations:
                raise ImportError("the onnx package is not installed (it is a dependency of this software)")
            spec = importlib.util.spec_from_file_location(
                "onnx.onnx_ml_pb2", Path(next(iter(package.submodule_search_locations))) / "onnx_ml_pb2.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["onnx.onnx_ml_pb2"] = module
        return module.ModelProto


_PROTO_LOCK = threading.Lock()


def suppress(boxes: Sequence[Box], overlap: float, *, whole_pixels: bool = False) -> list[Box]:
    """Non-maximum suppression: of boxes overlapping by more than ``overlap`` IoU, the best-scored.
    ``whole_pixels``: overlaps measured on the boxes cut to whole pixels (the boxes kept are not cut)."""
    if len(boxes) < 2:
        return list(boxes)
    rects = [[int(b.x0), int(b.y0), int(b.width), int(b.height)] if whole_pixels else [b.x0, b.y0, b.width, b.height]
             for b in boxes]
    keep = cv2.dnn.NMSBoxes(rects, [b.score for b in boxes], 0.0, overlap)
    return [boxes[i] for i in np.array(keep).flatten()]


class Detector:
    """One or two networks over a frame, whole or in overlapping tiles; boxes in the frame's coordinates."""

    def __init__(self, networks: Sequence, tiles: int = 1):
        self.networks = list(networks)
        self.tiles = tiles

    def __call__(self, image: np.ndarray) -> list[Box]:
        found: list[Box] = []
        for x, y, part in _tiles(image, self.tiles):
            for network in self.networks:
                found += [box.scaled(1, 1, x, y) for box in network(part)]
        return found


class PerThread:
    """What ``make`` builds, once for each thread that asks: a network is never shared between threads."""

    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._local = threading.local()

    def get(self) -> T:
        if not hasattr(self._local, "made"):
            self._local.made = self._make()
        return self._local.made


class Ordered:
    """A detector per thread over a stream of frames, the boxes handed back in the frames' order.

    At the sizes the masking uses, a network gains little from splitting one
    frame across threads (YuNet in OpenCV took 15 ms a 640x360 frame on one
    thread or two), so frames are detected side by side, one on each thread.
    Two frames more than there are threads are held at a time (fewer lose
    speed when a core is taken away for a moment): under the staff policy
    each is a whole decoded picture, 25 MB at 4K.
    """

    def __init__(self, make: Callable[[], Detector], workers: int):
        self._detectors = PerThread(make)
        self._pool = ThreadPoolExecutor(max(workers, 1), thread_name_prefix="detect")
        self.held = max(workers, 1) + 2   # frames given and not yet handed back, at most

    def _detect(self, image: np.ndarray) -> list[Box]:
        return self._detectors.get()(image)

    def __call__(self, items: Iterable[tuple[T, np.ndarray]]) -> Iterator[tuple[T, list[Box]]]:
        """For each (item, image), in order: the item and the boxes found in its image."""
        waiting: deque[tuple[T, Future]] = deque()
        try:
            for item, image in items:
                waiting.append((item, self._pool.submit(self._detect, image)))
                if len(waiting) >= self.held:
                    done, future = waiting.popleft()
                    yield done, future.result()
            while waiting:
                done, future = waiting.popleft()
                yield done, future.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _tiles(image: np.ndarray, count: int):
    if count <= 1:
        yield 0, 0, image
        return
    height, width = image.shape[:2]
    tile_w = int(np.ceil(width / count * (1 + _TILE_OVERLAP)))
    tile_h = int(np.ceil(height / count * (1 + _TILE_OVERLAP)))
    for row in range(count):
        for col in range(count):
            x = min(int(col * width / count), width - tile_w)
            y = min(int(row * height / count), height - tile_h)
            yield x, y, image[y:y + tile_h, x:x + tile_w]


def networks(kind: str, paths: dict[str, Path], min_score: float, threads: int = 0) -> list:
    """The networks of detector ``kind``, from the model files ``paths`` (by detector name); ``threads``:
    each network's inference threads (0: every core)."""
    made = {"yunet": lambda: YuNet(paths["yunet"], min_score, threads),
            "centerface": lambda: CenterFace(paths["centerface"], min_score, threads)}
    if kind == "ensemble":
        return [made["yunet"](), made["centerface"]()]
    return [made[kind]()]


MIN_DETECT_WIDTH = 640


def detection_size(width: int, height: int, scale: float, tiles: int) -> tuple[int, int]:
    """The size frames are decoded at for detection.

    A fixed share of the original (``scale``, one half by default) keeps the
    smallest face that can be found the same size in the original's pixels
    whatever the resolution (YuNet finds faces down to about 10 px, so about
    20 px at one half); never narrower than 640 px, never wider than the
    original. With tiles, each tile gets that size.
    """
    target = max(MIN_DETECT_WIDTH, int(round(width * scale))) * max(tiles, 1)
    if target >= width:
        return width, height
    scaled_h = max(2, int(round(height * target / width / 2)) * 2)
    return target, scaled_h
