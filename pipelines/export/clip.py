"""Cutting a clip out of a video: frame-accurate, re-encoded, nothing of the source's metadata carried.

A cut made by copying packets would start at a key frame, up to seconds
before the requested time; decoding and encoding again starts the clip on
the first frame at or after it. The masked video's pixels are decoded and
encoded as they are: the masks stay where they were.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from pipelines import ffmpeg_cli
from pipelines.errors import MediaToolError, RejectedInput
from pipelines.pipeline import Tools
from pipelines.sniff import sniff_container

_TIME = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.(\d{1,3}))?$")


class RangeError(ValueError):
    """A clip range that is malformed, reversed or outside the video."""


def parse_time(text: str) -> float:
    """Seconds in ``HH:MM:SS`` or ``HH:MM:SS.mmm``; RangeError for anything else."""
    match = _TIME.match(text.strip())
    if not match:
        raise RangeError(f"{text!r} is not a time of the form HH:MM:SS or HH:MM:SS.mmm")
    hours, minutes, seconds, millis = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int((millis or "0").ljust(3, "0")) / 1000


def clock(seconds: float) -> str:
    """``HH:MM:SS.mmm``, the form parse_time reads."""
    millis = int(round(seconds * 1000))
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}.{millis % 1000:03d}"


@dataclass(frozen=True)
class Range:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def check_range(start: float, end: float, duration: float) -> Range:
    """The range, if it lies inside a video of ``duration`` seconds and is not empty or reversed."""
    if end <= start:
        raise RangeError(f"the clip must end after it starts: --from {clock(start)} --to {clock(end)}")
    if start >= duration:
        raise RangeError(f"--from {clock(start)} is at or past the end of the video ({clock(duration)})")
    if end > duration + 0.0005:
        raise RangeError(f"--to {clock(end)} is past the end of the video ({clock(duration)})")
    return Range(start, end)


def duration(source: Path, tools: Tools) -> float:
    """The video's length in seconds, as its container gives it."""
    report = ffmpeg_cli.ffprobe_json(source, demuxer=sniff_container(source).demuxer, tools=tools,
                                     show=("-show_format",))
    try:
        return float(report["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        raise RejectedInput("the video's length cannot be read, so no range can be checked against it") from None


def cut(source: Path, out: Path, span: Range, tools: Tools, *, crf: int = 18, preset: str = "veryfast") -> None:
    """``span`` of ``source``'s first video stream and its audio, as a new H.264/AAC MP4 at ``out``."""
    container = sniff_container(source)
    given = ffmpeg.input(ffmpeg_cli.media_url(source), ss=f"{span.start:.3f}",
                         **ffmpeg_cli.input_options(container.demuxer, tools))
    stream = ffmpeg.output(
        given["v:0"], given["a?"], f"file:{Path(out).resolve()}", t=f"{span.duration:.3f}",
        vcodec="libx264", preset=preset, crf=str(crf), acodec="aac", **{"b:a": "192k"},
        threads=str(tools.threads), map_metadata="-1", map_chapters="-1", fflags="+bitexact",
        **{"flags:v": "+bitexact", "flags:a": "+bitexact"}, movflags="+faststart", f="mp4",
    )
    args = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-n").compile(cmd=tools.ffmpeg)
    done = ffmpeg_cli.run_tool(args, tools)
    if done.returncode != 0:
        Path(out).unlink(missing_ok=True)
        raise MediaToolError(f"the clip could not be cut: {ffmpeg_cli.error_summary(done.stderr)}")
    # The container's length can run past the last picture (audio continues): a range there holds no frame.
    found = ffmpeg_cli.ffprobe_json(out, demuxer="mov", tools=tools, show=("-show_streams",),
                                    extra=("-select_streams", "v:0", "-count_packets"))
    if not any(int(s.get("nb_read_packets") or 0) for s in found.get("streams", [])):
        Path(out).unlink(missing_ok=True)
        raise RangeError(f"no video frame lies between {clock(span.start)} and {clock(span.end)}")
