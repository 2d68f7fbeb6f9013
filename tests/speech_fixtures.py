"""Speech recordings for transcription tests and benchmarks, made from the shared Russian set.

Clips are decoded, joined with silence between them, and written as 16 kHz
WAV; where each clip starts in the joined file is returned with its
reference text, so tests can check both words and times.
"""

from __future__ import annotations

import csv
import re
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import decode_audio

RATE = 16000


@dataclass(frozen=True)
class Placed:
    text: str        # reference transcript ("" for a part in another language)
    start: float     # seconds into the joined file
    end: float


def references(folder: Path) -> dict[str, str]:
    with open(folder / "transcripts.tsv", encoding="utf-8") as handle:
        return {row["file"]: row["text"] for row in csv.DictReader(handle, delimiter="\t")}


# The shared set's references write numbers as digits ("нажмите 1"); a transcript may spell them.
_NUMBERS = dict(enumerate("ноль один два три четыре пять шесть семь восемь девять десять".split()))


def normalise(text: str) -> str:
    """Lower case, ё as е, no punctuation, single spaces, 0-10 as words: how word error rates are counted."""
    words = re.sub(r"[^\w\s]", " ", text.lower().replace("ё", "е")).split()
    return " ".join(_NUMBERS.get(int(word), word) if word.isdigit() else word for word in words)


def spoken(text: str, language: str, folder: Path) -> np.ndarray:
    """``text`` read by espeak-ng in ``language`` (a voice, e.g. "de"), as 16 kHz samples."""
    wav = folder / f"espeak-{language}.wav"
    subprocess.run(["espeak-ng", "-v", language, "-s", "150", "-w", str(wav), text], check=True)
    return decode_audio(str(wav), sampling_rate=RATE)


def join(parts: list[tuple[str, np.ndarray]], gap_s: float, out: Path) -> list[Placed]:
    """Write the parts (reference text, samples) one after another with ``gap_s`` of silence between."""
    gap = np.zeros(int(gap_s * RATE), dtype=np.float32)
    pieces, placed, at = [gap], [], gap_s
    for text, samples in parts:
        pieces += [samples, gap]
        placed.append(Placed(text, at, at + len(samples) / RATE))
        at += len(samples) / RATE + gap_s
    joined = np.concatenate(pieces)
    with wave.open(str(out), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes((np.clip(joined, -1, 1) * 32767).astype("<i2").tobytes())
    return placed


def russian_set(folder: Path) -> list[tuple[str, np.ndarray]]:
    return [(text, decode_audio(str(folder / name), sampling_rate=RATE))
            for name, text in sorted(references(folder).items())]
