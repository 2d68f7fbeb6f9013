"""The sound of a recording as 16 kHz mono samples in a file on disk, read window by window.

ffmpeg writes raw 16-bit samples next to the step's other files; the step
maps them into memory a window at a time, so a three-hour recording costs
the same memory as a three-minute one (about 115 MB of disk an hour).
"""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from pipelines import ffmpeg_cli
from pipelines.errors import RejectedInput
from pipelines.pipeline import Tools
from pipelines.sniff import sniff_container

SAMPLE_RATE = 16000


def extract(original: Path, out: Path, tools: Tools) -> np.memmap:
    """The first audio stream of ``original`` as int16 samples in ``out``; RejectedInput if it cannot be decoded."""
    container = sniff_container(original)
    stream = ffmpeg.input(ffmpeg_cli.media_url(original), **ffmpeg_cli.input_options(container.demuxer, tools))
    stream = stream.output(f"file:{Path(out).resolve()}", map="0:a:0", ac=1, ar=SAMPLE_RATE, f="s16le",
                           acodec="pcm_s16le", vn=None, sn=None, dn=None)
    args = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-n").compile(cmd=tools.ffmpeg)
    done = ffmpeg_cli.run_tool(args, tools)
    if done.returncode != 0:
        raise RejectedInput(f"the audio cannot be decoded: {ffmpeg_cli.error_summary(done.stderr)}")
    if Path(out).stat().st_size < 2:
        return np.zeros(0, dtype=np.int16)
    return np.memmap(out, dtype=np.int16, mode="r")


def window(samples: np.ndarray, start: int, end: int) -> np.ndarray:
    """Samples ``start`` to ``end`` as float32 in [-1, 1], the form the models take."""
    return np.asarray(samples[max(start, 0):end], dtype=np.float32) / 32768.0
