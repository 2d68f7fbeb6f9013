"""Speech regions grouped into chunks of up to 30 s: the unit of language identification and of decoding.

A chunk is one span of the recording, silences inside it included, so every
time in it maps to the original by adding its start. Regions are joined only
across short pauses: a longer pause is where speakers, and often languages,
change, and a chunk mixing two languages could be decoded as one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.transcribe.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Chunk:
    start: int   # samples
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


def group(regions: list[tuple[int, int]], *, max_s: float, gap_s: float) -> list[Chunk]:
    chunks: list[Chunk] = []
    for start, end in regions:
        if chunks and start - chunks[-1].end <= gap_s * SAMPLE_RATE and end - chunks[-1].start <= max_s * SAMPLE_RATE:
            chunks[-1] = Chunk(chunks[-1].start, end)
        else:
            chunks.append(Chunk(start, end))
    return chunks
