"""Masked frames out: each frame masked, the due ones leak-checked, every one encoded, in order.

The same whether a frame comes straight from the one decoding of the video
(a few frames behind the detection) or from a second decoding once every
track is known (the staff policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import MaskingLeak
from pipelines.pipeline import Tools
from pipelines.redact import audit, detect, masks, report, video

LEAK_FAILED = ("the masked video was not kept. Reprocess with stricter masking (--set redact.detector=ensemble, "
               "or a higher redact.detect_scale), or with --set redact.leak_check=review to keep it for a person "
               "to check (never released)")


def leak_said(detector: str, hits: list[dict]) -> str:
    at = ", ".join(f"{m['start_s']:.1f} s" for m in report.leak_moments(hits)[:5])
    return f"the leak check ({detector}) found {len(hits)} face(s) showing after masking, at {at}"


class Renderer:
    """Masks frames given in order, hands the due ones to the leak check and every one to the encoder.

    ``shown``: for a frame index, the boxes of faces the policy leaves
    showing there, which the leak check does not count as leaks.
    """

    def __init__(self, silent: Path, size: tuple[int, int], pix_fmt: str, sar: Fraction, params: Mapping[str, Any],
                 tools: Tools, check: audit.LeakCheck, check_detector: str, shown: Callable[[int], list[detect.Box]],
                 log: Path):
        self._silent, self.size, self.pix_fmt, self._sar = silent, size, pix_fmt, sar
        self._params, self._tools, self._log = params, tools, log
        self.check, self._check_detector, self._shown = check, check_detector, shown
        self._encoder: video.Encoder | None = None
        self._rng = np.random.default_rng()
        self.rendered = 0
        self.masked_frames = 0

    def __call__(self, frame: video.Frame, regions: Sequence[detect.Box]) -> None:
        p = self._params
        if self._encoder is None:
            self._encoder = video.Encoder(self._silent, *self.size, frame.time_base, self._tools, crf=p["crf"],
                                          preset=p["preset"], log=self._log, pix_fmt=self.pix_fmt, sar=self._sar)
        masks.draw(frame.image, regions, shape=p["shape"], style=p["style"], scale=p["mask_scale"], rng=self._rng)
        self.masked_frames += bool(regions)
        seconds = float(frame.pts * frame.time_base)
        if self.check.due(seconds):
            self.check.submit(frame.index, seconds, frame.image, self.pix_fmt, regions, self._shown(frame.index))
            # A run that fails on a leak keeps no video: the first leak found ends it.
            if p["leak_check"] == "fail" and self.check.found_any():
                raise MaskingLeak(f"{leak_said(self._check_detector, self.check.finish())} (looking stopped at "
                                  f"the first): {LEAK_FAILED}")
        self._encoder.write(frame.pts, frame.image)
        self.rendered += 1

    def finish(self) -> list[dict]:
        """The encoded video closed; every leak the check found, once it has looked at every frame given."""
        if self._encoder is None:
            raise RuntimeError("no frame was given to the renderer")
        self._encoder.close()
        return self.check.finish()

    def abort(self) -> None:
        """Stop the check and the encoder and remove what was encoded (the step failed)."""
        self.check.close()
        if self._encoder is not None:
            self._encoder.abort()
        self._silent.unlink(missing_ok=True)
