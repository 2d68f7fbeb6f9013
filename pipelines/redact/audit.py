"""A leak audit: a second look at a masked video, frame by frame, for any face left showing.

YuNet runs on every full-size frame of the output, at a fixed score. It is
independent of the masking only where it differs from the detector that made
the masks (another network, or the same at a higher resolution); tests and
the benchmark use it at full size on every frame.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.pipeline import Tools
from pipelines.redact import detect, video


def leaks(path: Path, model: Path, tools: Tools, workdir: Path, *, min_score: float = 0.5,
          display: tuple[int, int] | None = None) -> list[dict]:
    """Every face YuNet finds at ``min_score`` or more in ``path``: frame, box (x, y, w, h) and score.

    ``display``: the size of the picture a person sees, where pixels are not
    square (anamorphic video); boxes are then in that picture's pixels.
    """
    network = detect.YuNet(model, min_score)
    found = []
    for frame in video.frames(path, tools, workdir / "audit-decode.log", size=display):
        for box in network(frame.image):
            found.append({"frame": frame.index, "box": [round(box.x0), round(box.y0), round(box.width),
                                                        round(box.height)], "score": round(box.score, 3)})
    return found
