"""What the redact step is, apart from how it works: its version, parameters, the models it loads and what
the worker must hand it. Light to import (no media library), so that declaring the pipeline, checking
settings and answering a command cost nothing of the step's weight (pipelines.redact.step has that).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.pipeline import Param

DETECTORS = ("yunet", "centerface", "ensemble")
MODEL_NAMES = {"yunet": "yunet-2023mar", "centerface": "centerface"}   # the registry's names, by detector
STAFF_MODEL = "dlib-face-recognition"                                   # face embeddings, for the staff policy
# The leak check looks with the other family than the one that made the masks (pipelines.redact.audit).
OTHER_FAMILY = {"yunet": "centerface", "centerface": "yunet", "ensemble": "yunet"}
SHAPES = ("ellipse", "box")
STYLES = ("fill", "noise")

VERSION = "3"
POLICIES = ("all", "staff", "none")
PARAMS: dict[str, Param] = {
    "policy": Param("all", choices=POLICIES),           # whose faces: everyone's, enrolled staff's, nobody's
    "detector": Param("yunet", choices=DETECTORS),
    "detect_scale": Param(0.5, minimum=0.1, maximum=1.0),  # of the width the detector sees (1: full size)
    "tiles": Param(1, minimum=1, maximum=4),            # 2: a 2x2 grid of overlapping tiles, for distant faces
    "min_score": Param(0.15, minimum=0.05, maximum=0.95),  # low: a false mask is safe, a missed face is not
    "max_gap_frames": Param(12, minimum=0, maximum=250),  # missed frames a track survives
    "pad_frames": Param(8, minimum=0, maximum=250),     # masked before a track's first and after its last frame
    "shape": Param("ellipse", choices=SHAPES),
    "style": Param("fill", choices=STYLES),
    "mask_scale": Param(2.0, minimum=1.5, maximum=4),  # of the detected box: hair and ears of a turned head
    "crf": Param(18, minimum=0, maximum=51),            # x264 quality: 18 is visually near-lossless
    "preset": Param("superfast", choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                                         "slow", "slower", "veryslow")),
    "voice": Param("keep", choices=("keep", "disguise")),
    "match_distance": Param(0.6, minimum=0.2, maximum=0.9),  # staff: dlib distance under which faces match
    # The leak check (pipelines.redact.audit): the other detector family on the masked frames. A face it finds
    # fails the step ("fail") or, with "review", is listed for a person and the run is never released.
    "leak_check": Param("fail", choices=("fail", "review")),
    "leak_scale": Param(0.75, minimum=0.5, maximum=1.0),  # of the width it sees: finer than detect_scale's default
    "leak_every_s": Param(0.2, minimum=0.0, maximum=0.2),  # media time between checked frames (0: every frame)
}


def model_names(params: Mapping[str, Any]) -> list[str]:
    """The registry's models a run with these parameters loads: the detectors, the leak check's, dlib's."""
    kinds = ("yunet", "centerface") if params["detector"] == "ensemble" else (params["detector"],)
    names = [MODEL_NAMES[kind] for kind in dict.fromkeys(kinds + (OTHER_FAMILY[params["detector"]],))]
    if params["policy"] == "staff":
        names.append(STAFF_MODEL)
    return names


def needs(params: Mapping[str, Any]) -> frozenset[str]:
    """The staff policy compares faces with the enrolled staff: the worker must hand their embeddings over."""
    return frozenset({"staff"}) if params["policy"] == "staff" else frozenset()
