"""Where people speak: Silero VAD (bundled with faster-whisper) over the recording, window by window.

Two views of the same detection: ``core``, the speech itself, which the
transcript must account for second by second, and ``regions``, the same
speech padded into the silence around it (as faster-whisper pads it), which
is what is decoded, since Whisper hears the first and last syllables better
with a little silence around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from pipelines.transcribe.audio import SAMPLE_RATE, window

_WINDOW_S = 600  # ten minutes at a time: bounded memory on any length of recording
PAD_S = 0.4      # faster-whisper's default padding of each region into the silence around it


@dataclass(frozen=True)
class Speech:
    core: list[tuple[int, int]]      # (start, end) samples of speech, unpadded
    regions: list[tuple[int, int]]   # the same, padded into the silence around them, none longer than asked


def speech(samples: np.ndarray, *, threshold: float, max_region_s: float) -> Speech:
    """The speech of the whole recording; no padded region is longer than ``max_region_s``."""
    options = VadOptions(threshold=threshold, max_speech_duration_s=max_region_s - 2 * PAD_S,
                         min_silence_duration_ms=160, min_speech_duration_ms=0, speech_pad_ms=0)
    core: list[tuple[int, int]] = []
    step = _WINDOW_S * SAMPLE_RATE
    for offset in range(0, len(samples), step):
        audio = window(samples, offset, offset + step)
        for index, found in enumerate(get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)):
            start, end = offset + found["start"], offset + found["end"]
            across = index == 0 and core and core[-1][1] >= offset - SAMPLE_RATE // 10 and start <= offset
            if across and end - core[-1][0] <= (max_region_s - 2 * PAD_S) * SAMPLE_RATE:
                core[-1] = (core[-1][0], end)  # speech running across the boundary of two windows
            else:
                core.append((start, end))
    return Speech(core=core, regions=padded(core, len(samples)))


def padded(core: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Each region widened by PAD_S into the silence on each side; a shorter silence is shared half and half."""
    pad = int(PAD_S * SAMPLE_RATE)
    out = []
    for index, (start, end) in enumerate(core):
        before = start - core[index - 1][1] if index else None
        after = core[index + 1][0] - end if index + 1 < len(core) else None
        start -= pad if before is None or before >= 2 * pad else before // 2
        end += pad if after is None or after >= 2 * pad else after - after // 2
        out.append((max(start, 0), min(end, length)))
    return out
