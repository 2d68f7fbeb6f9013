"""Drawing masks that carry nothing of the face beneath them.

Blurring or pixelating a face keeps a function of its pixels, and published
attacks recover identities from exactly that (McPherson, Shokri and
Shmatikov, 2016: 57-71% re-identified). So a mask is either a solid fill or
coarse blocks of random noise: its pixels are chosen without looking at the
face. The region is the detected box enlarged by ``scale`` and raised a
little, so hair, ears and chin are covered too.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipelines.redact.detect import Box

_FILL_BGR = (128, 128, 128)
_FILL_Y = 128               # the same grey in I420 (BT.601 limited range: 16 + 219 * 128/255 rounds to 126-128)
_NOISE_BLOCK = 16           # pixels per noise block
_RAISE = 0.1                # of the face's height: the region is moved up to cover the hair


def region(box: Box, scale: float) -> tuple[int, int, int, int]:
    """Centre and half-axes (cx, cy, ax, ay) of the enlarged region, in whole pixels, rounded outwards."""
    cx = (box.x0 + box.x1) / 2
    cy = (box.y0 + box.y1) / 2 - _RAISE * box.height
    # The ellipse must still reach the box's lower corners after the raise: half-height grows to match.
    ax = box.width * scale / 2
    ay = box.height * scale / 2 * 1.2
    return int(round(cx)), int(round(cy)), int(np.ceil(ax)) + 1, int(np.ceil(ay)) + 1


def draw(image: np.ndarray, boxes: Iterable[Box], *, shape: str, style: str, scale: float,
         rng: np.random.Generator) -> None:
    """Masks every box on ``image`` in place: BGR (height x width x 3) or I420 ((height * 3/2) x width)."""
    boxes = list(boxes)
    if not boxes:
        return
    if image.ndim == 2:
        _draw_i420(image, boxes, shape, style, scale, rng)
        return
    if style == "fill":
        for box in boxes:
            _paint(image, box, shape, scale, _FILL_BGR)
        return
    _noise(image, boxes, shape, scale, rng, 0, 256)


def _draw_i420(image: np.ndarray, boxes: list[Box], shape: str, style: str, scale: float,
               rng: np.random.Generator) -> None:
    """The same masks on the planes of an I420 frame: the picture's brightness (Y) carries the face, so
    the luma mask is drawn exactly as in BGR; colour (U, V, at half size) is set to neutral a pixel wider."""
    height = image.shape[0] * 2 // 3
    width = image.shape[1]
    luma = image[:height]
    chroma = image[height:].reshape(-1)   # U then V, each (height/2) x (width/2), packed without row breaks
    side = (height // 2) * (width // 2)
    u, v = chroma[:side].reshape(height // 2, width // 2), chroma[side:2 * side].reshape(height // 2, width // 2)
    if style == "fill":
        for box in boxes:
            _paint(luma, box, shape, scale, _FILL_Y)
    else:
        _noise(luma, boxes, shape, scale, rng, 16, 236)  # video-range luma
    for box in boxes:
        half = Box(box.x0 / 2 - 1, box.y0 / 2 - 1, box.x1 / 2 + 1, box.y1 / 2 + 1, box.score)
        _paint(u, half, shape, scale, 128)
        _paint(v, half, shape, scale, 128)


def covered(box: Box, masked: Iterable[Box], *, shape: str, scale: float) -> float:
    """The share of ``box``'s pixels that the masks of the boxes ``masked`` cover."""
    x0, y0 = int(np.floor(box.x0)), int(np.floor(box.y0))
    width, height = max(int(np.ceil(box.x1)) - x0, 1), max(int(np.ceil(box.y1)) - y0, 1)
    stencil = np.zeros((height, width), dtype=np.uint8)
    for region_box in masked:
        _paint(stencil, region_box.scaled(1, 1, -x0, -y0), shape, scale, 1)
    return float(stencil.mean())


def _noise(plane: np.ndarray, boxes: list[Box], shape: str, scale: float, rng: np.random.Generator,
           low: int, high: int) -> None:
    """Coarse blocks of random values (per channel, if ``plane`` has channels) inside the regions."""
    stencil = np.zeros(plane.shape[:2], dtype=np.uint8)
    for box in boxes:
        _paint(stencil, box, shape, scale, 255)
    ys, xs = np.nonzero(stencil)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    size = ((y1 - y0) // _NOISE_BLOCK + 1, (x1 - x0) // _NOISE_BLOCK + 1, *plane.shape[2:])
    blocks = rng.integers(low, high, size=size, dtype=np.uint8)
    noise = np.repeat(np.repeat(blocks, _NOISE_BLOCK, axis=0), _NOISE_BLOCK, axis=1)[:y1 - y0, :x1 - x0]
    inside = stencil[y0:y1, x0:x1] > 0
    plane[y0:y1, x0:x1][inside] = noise[inside]


def _paint(target: np.ndarray, box: Box, shape: str, scale: float, colour) -> None:
    cx, cy, ax, ay = region(box, scale)
    if shape == "ellipse":
        cv2.ellipse(target, (cx, cy), (ax, ay), 0, 0, 360, colour, thickness=-1, lineType=cv2.LINE_8)
    else:
        cv2.rectangle(target, (cx - ax, cy - ay), (cx + ax, cy + ay), colour, thickness=-1)
