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


def most_seconds(declared_s: float | None) -> float | None:
    """How much sound a recording declaring ``declared_s`` may hold before it is taken for a liar."""
    return None if not declared_s else 1.5 * declared_s + 60


def extract(original: Path, out: Path, tools: Tools, declared_s: float | None = None) -> np.memmap:
    """The first audio stream of ``original`` as int16 samples in ``out``; RejectedInput if it cannot be decoded,
    or if it holds far more sound than the ``declared_s`` seconds the probe found.

    A container can declare ten seconds and hold three hours; what is
    written here is bounded by what was declared (``most_seconds``), so
    such a file is refused instead of filling the disk.
    """
    container = sniff_container(original)
    limit = most_seconds(declared_s)
    stream = ffmpeg.input(ffmpeg_cli.media_url(original), **ffmpeg_cli.input_options(container.demuxer, tools))
    bound = {"t": f"{limit + 1:.3f}"} if limit else {}
    stream = stream.output(f"file:{Path(out).resolve()}", map="0:a:0", ac=1, ar=SAMPLE_RATE, f="s16le",
                           acodec="pcm_s16le", vn=None, sn=None, dn=None, **bound)
    args = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-n").compile(cmd=tools.ffmpeg)
    done = ffmpeg_cli.run_tool(args, tools)
    if done.returncode != 0:
        raise RejectedInput(f"the audio cannot be decoded: {ffmpeg_cli.error_summary(done.stderr)}")
    size = Path(out).stat().st_size
    if limit and size > limit * SAMPLE_RATE * 2:
        Path(out).unlink()
        raise RejectedInput(f"the sound runs past {limit:.0f} s, far longer than the {declared_s:g} s the file "
                            "declares: refused as misleading")
    if size < 2:
        return np.zeros(0, dtype=np.int16)
    return np.memmap(out, dtype=np.int16, mode="r")


def window(samples: np.ndarray, start: int, end: int) -> np.ndarray:
    """Samples ``start`` to ``end`` as float32 in [-1, 1], the form the models take."""
    return np.asarray(samples[max(start, 0):end], dtype=np.float32) / 32768.0
