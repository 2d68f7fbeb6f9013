"""Where people speak: Silero VAD (bundled with faster-whisper) over the recording, window by window."""

from __future__ import annotations

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

from pipelines.transcribe.audio import SAMPLE_RATE, window

_WINDOW_S = 600  # ten minutes at a time: bounded memory on any length of recording


def speech_regions(samples: np.ndarray, *, threshold: float, max_region_s: float) -> list[tuple[int, int]]:
    """(start, end) sample offsets of speech in the whole recording, none longer than ``max_region_s``."""
    options = VadOptions(threshold=threshold, max_speech_duration_s=max_region_s, min_silence_duration_ms=160,
                         min_speech_duration_ms=0)
    regions: list[tuple[int, int]] = []
    step = _WINDOW_S * SAMPLE_RATE
    for offset in range(0, len(samples), step):
        audio = window(samples, offset, offset + step)
        for index, found in enumerate(get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)):
            start, end = offset + found["start"], offset + found["end"]
            across = index == 0 and regions and regions[-1][1] >= offset - SAMPLE_RATE // 10 and start <= offset
            if across and end - regions[-1][0] <= max_region_s * SAMPLE_RATE:
                regions[-1] = (regions[-1][0], end)  # speech running across the boundary of two windows
            else:
                regions.append((start, end))
    return regions
