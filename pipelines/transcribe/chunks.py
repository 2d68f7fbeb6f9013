"""Speech regions joined into chunks of up to 30 s of speech: the unit of language identification and
of decoding, as Whisper was trained on 30-second windows.

The silence between regions is left out of a chunk (Whisper does best, and
fastest, on speech alone); every time in a chunk maps back to the original
through the regions it is made of. Regions are joined only across short
pauses: a longer pause is where speakers, and often languages, change, and a
chunk mixing two languages could be decoded as one of them.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from pipelines.transcribe.audio import SAMPLE_RATE, window


@dataclass(frozen=True)
class Chunk:
    parts: tuple[tuple[int, int], ...]   # (start, end) samples of each speech region in the original

    @property
    def start_s(self) -> float:
        return self.parts[0][0] / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.parts[-1][1] / SAMPLE_RATE

    @property
    def speech_samples(self) -> int:
        return sum(end - start for start, end in self.parts)

    @property
    def lengths(self) -> list[int]:
        return [end - start for start, end in self.parts]

    def sub(self, first: int, last: int) -> Chunk:
        """The chunk of parts ``first`` to ``last`` (exclusive)."""
        return Chunk(self.parts[first:last])

    def audio(self, samples: np.ndarray) -> np.ndarray:
        return np.concatenate([window(samples, start, end) for start, end in self.parts])

    def to_original(self, seconds: float) -> float:
        """A time in the chunk's audio as a time in the original recording."""
        offsets = np.cumsum([0] + [end - start for start, end in self.parts])
        at = min(max(int(round(seconds * SAMPLE_RATE)), 0), int(offsets[-1]))
        index = min(bisect_right(offsets, at) - 1, len(self.parts) - 1)
        return round((self.parts[index][0] + at - int(offsets[index])) / SAMPLE_RATE, 3)


def group(regions: list[tuple[int, int]], *, max_s: float, gap_s: float) -> list[Chunk]:
    chunks: list[Chunk] = []
    for start, end in regions:
        last = chunks[-1] if chunks else None
        if (last and start - last.parts[-1][1] <= gap_s * SAMPLE_RATE
                and last.speech_samples + end - start <= max_s * SAMPLE_RATE):
            chunks[-1] = Chunk((*last.parts, (start, end)))
        else:
            chunks.append(Chunk(((start, end),)))
    return chunks


def within(regions: list[tuple[int, int]], start_s: float, end_s: float, *, max_s: float, gap_s: float) -> list[Chunk]:
    """The speech of ``regions`` between two times, as chunks of its own."""
    start, end = int(start_s * SAMPLE_RATE), int(round(end_s * SAMPLE_RATE))
    inside = [(max(a, start), min(b, end)) for a, b in regions if min(b, end) > max(a, start)]
    return group(inside, max_s=max_s, gap_s=gap_s)
