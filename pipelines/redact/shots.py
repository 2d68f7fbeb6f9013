"""Shot cuts: where the picture changes at once, so that no face track is carried from one shot into the next.

A track that crossed a cut would join two people standing in the same place
on either side of it (a stranger, then an enrolled staff member), and one
decision would be taken for both. Consecutive frames are compared by the
histograms of their brightness and colour (Bhattacharyya distance); a cut
changes them far more than movement, panning or changing light do.
"""

from __future__ import annotations

import cv2
import numpy as np

CUT_DISTANCE = 0.5   # Bhattacharyya distance between consecutive frames' histograms that marks a cut
_SIDE = 64           # histograms are taken on a thumbnail: cheap, and blind to noise


class Cuts:
    """Fed frame after frame; says whether each one starts a new shot."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self.count = 0

    def __call__(self, image: np.ndarray) -> bool:
        thumb = cv2.resize(image, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(thumb, cv2.COLOR_BGR2HSV)
        histogram = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 8], [0, 180, 0, 256, 0, 256])
        cv2.normalize(histogram, histogram)
        cut = self._previous is not None and \
            cv2.compareHist(self._previous, histogram, cv2.HISTCMP_BHATTACHARYYA) > CUT_DISTANCE
        self._previous = histogram
        self.count += cut
        return cut
