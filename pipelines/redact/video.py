"""Frames in and out of ffmpeg, streamed, with their presentation timestamps.

The untrusted recording is only ever decoded by an ffmpeg child (allowlisted
demuxer and decoders, memory ceiling, dies with us), which hands upright
frames (display rotation applied) to this process as raw video in NUT, a
container that carries each frame's timestamp. Masked frames go to a second
ffmpeg child the same way, which encodes them with their original timestamps,
so variable frame rates and the frame count survive. Nothing holds more than
a frame or two in memory.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import ffmpeg
import numpy as np

from pipelines import child, ffmpeg_cli
from pipelines.errors import MediaToolError, NoSpace, RejectedInput
from pipelines.pipeline import Tools
from pipelines.sniff import sniff_container

BGR = "bgr24"        # height x width x 3: what the detectors take
I420 = "yuv420p"     # planar 4:2:0, as (height * 3/2) x width: what H.264 takes; half the bytes, no conversion
# How long a streaming child may go without producing or taking a frame before it is killed as hung.
_MIN_STALL_S = 60.0


@dataclass(frozen=True)
class Frame:
    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray          # upright; BGR (height x width x 3) or I420 ((height * 3/2) x width)


def _stall_s(tools: Tools) -> float:
    return max(_MIN_STALL_S, tools.timeout_s / 4)


def _confined(args: list[str], tools: Tools, **pipes) -> subprocess.Popen:
    try:
        return child.start(args, child.Limits(timeout_s=tools.timeout_s, memory_bytes=tools.memory_limit_bytes),
                           **pipes)
    except OSError as exc:
        raise MediaToolError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc


def _read_errors(log: Path) -> list[str]:
    try:
        return ffmpeg_cli.error_lines(log.read_bytes())
    except FileNotFoundError:
        return []


def picture(image: np.ndarray, pix_fmt: str, size: tuple[int, int]) -> np.ndarray:
    """A decoded frame (``pix_fmt``, stored pixels) as BGR at ``size``: one resize gives the display geometry
    (anamorphic video) and the scale together. The frame itself when it is that already (not a copy)."""
    bgr = cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if pix_fmt == I420 else image
    if (bgr.shape[1], bgr.shape[0]) == tuple(size):
        return bgr
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


def frames(original: Path, tools: Tools, log: Path, size: tuple[int, int] | None = None,
           pix_fmt: str = BGR) -> Iterator[Frame]:
    """Every frame of the first video stream that is not cover art (``0:V``), upright, scaled to ``size``.

    Raises RejectedInput when the decoder reports any error: a frame that
    could not be decoded is a frame that could not be checked for faces, so
    the caller must not write a video from this pass.
    """
    container = sniff_container(original)
    output = {"map": "0:V:0", "an": None, "sn": None, "dn": None, "fps_mode": "passthrough",
              "vcodec": "rawvideo", "pix_fmt": pix_fmt, "f": "nut"}
    if size:
        output["vf"] = f"scale={size[0]}:{size[1]}:flags=area"
    stream = ffmpeg.input(ffmpeg_cli.media_url(original), **ffmpeg_cli.input_options(container.demuxer, tools))
    args = (stream.output("pipe:1", **output)
            .global_args("-hide_banner", "-nostdin", "-v", "error", "-copyts").compile(cmd=tools.ffmpeg))
    with open(log, "wb") as errors:
        process = _confined(args, tools, stdout=subprocess.PIPE, stderr=errors)
    watchdog = child.Watchdog(process, _stall_s(tools))
    count = 0
    try:
        try:
            with av.open(process.stdout, format="nut", mode="r") as demuxed:
                video = demuxed.streams.video[0]
                for decoded in demuxed.decode(video):
                    watchdog.alive()
                    image = np.ascontiguousarray(decoded.to_ndarray(format=pix_fmt))  # odd widths come padded
                    yield Frame(count, int(decoded.pts), video.time_base, image)
                    count += 1
        except (av.error.FFmpegError, IndexError) as exc:
            if not watchdog.stalled and process.wait() == 0:
                raise MediaToolError(f"reading the decoder's frames failed: {exc}") from exc
        code = process.wait()
    finally:
        watchdog.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if watchdog.stalled:
        raise MediaToolError(f"ffmpeg decoded no frame for {_stall_s(tools):g} s and was stopped")
    problems = _read_errors(log)
    if code < 0:
        raise MediaToolError(f"ffmpeg crashed decoding the video (signal {-code}) under the memory ceiling "
                             f"media.memory_limit_bytes = {tools.memory_limit_bytes}")
    if code != 0 or problems:
        raise RejectedInput(f"the video has {len(problems)} decoding error(s) after {count} good frame(s) "
                            f"({'; '.join(problems[:3]) or f'exit status {code}'}): a frame that cannot be decoded "
                            "cannot be checked for faces, so no masked video is made from it")
    if count == 0:
        raise RejectedInput("the video stream has no decodable frame")


class Encoder:
    """Writes frames, with the timestamps they came with, to an H.264 MP4 with no metadata of the original."""

    def __init__(self, out: Path, width: int, height: int, time_base: Fraction, tools: Tools, *,
                 crf: int, preset: str, log: Path, pix_fmt: str = BGR, sar: Fraction = Fraction(1)):
        self.tools = tools
        self.log = log
        # 4:2:0 needs even dimensions; an odd-sized picture keeps its size in 4:4:4 instead of being padded.
        coded = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream = ffmpeg.input("pipe:0", f="nut", protocol_whitelist="pipe", format_whitelist="nut",
                              codec_whitelist="rawvideo", threads=str(tools.threads))
        stream = stream.output(
            f"file:{Path(out).resolve()}", map="0:v:0", vcodec="libx264", preset=preset, crf=str(crf),
            pix_fmt=coded, threads=str(tools.threads), fps_mode="passthrough", enc_time_base="-1",
            video_track_timescale=str(time_base.denominator), map_metadata="-1", map_chapters="-1",
            fflags="+bitexact", **{"flags:v": "+bitexact"}, f="mp4",
            **({"vf": f"setsar={sar.numerator}/{sar.denominator}"} if sar != 1 else {}),
        )
        args = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-n", "-copyts").compile(
            cmd=tools.ffmpeg)
        with open(log, "wb") as errors:
            self.process = _confined(args, tools, stdin=subprocess.PIPE, stderr=errors)
        self.watchdog = child.Watchdog(self.process, _stall_s(tools))
        self.muxer = av.open(self.process.stdin, format="nut", mode="w")
        self.stream = self.muxer.add_stream("rawvideo")
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.pix_fmt = pix_fmt
        self.stream.codec_context.time_base = time_base
        self.stream.time_base = time_base
        self.time_base = time_base

    def write(self, pts: int, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(image, format=self.pix_fmt)
        frame.pts, frame.time_base = pts, self.time_base
        try:
            self.muxer.mux(self.stream.encode(frame))
        except (av.error.FFmpegError, BrokenPipeError, OSError) as exc:
            self._failed(exc)
        self.watchdog.alive()

    def close(self) -> None:
        try:
            self.muxer.mux(self.stream.encode())
            self.muxer.close()
            self.process.stdin.close()
        except (av.error.FFmpegError, BrokenPipeError, OSError) as exc:
            self._failed(exc)
        code = self.process.wait()
        self.watchdog.stop()
        if code != 0:
            self._failed(None)

    def abort(self) -> None:
        self.watchdog.stop()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def _failed(self, exc: BaseException | None) -> None:
        self.abort()
        problems = _read_errors(self.log)
        text = "; ".join(problems[:3]) or (str(exc) if exc else f"exit status {self.process.returncode}")
        if any(ffmpeg_cli.NO_SPACE in line for line in problems):
            raise NoSpace("the encoder could not write the masked video: the disk is full")
        if self.watchdog.stalled:
            text = f"it took no frame for {_stall_s(self.tools):g} s and was stopped"
        raise MediaToolError(f"the H.264 encoder failed: {text}")


def mux_audio(video: Path, original: Path, out: Path, tools: Tools, *, voice: str) -> str:
    """``video`` with the original's audio streams added; returns how the audio was carried.

    Audio is copied packet for packet unless the voice is to be disguised (a
    pitch shift of the whole track) or MP4 cannot hold the original codec,
    in which case it is re-encoded to AAC and the result says so.
    """
    container = sniff_container(original)
    if voice == "disguise":
        failure = _mux(video, original, container.demuxer, out, tools, audio=_disguise())
        if failure is not None:
            raise MediaToolError(f"the voice could not be disguised: {failure}")
        return "disguised (pitch shifted)"
    failure = _mux(video, original, container.demuxer, out, tools, audio={"acodec": "copy"})
    if failure is None:
        return "copied"
    out.unlink(missing_ok=True)
    failure = _mux(video, original, container.demuxer, out, tools, audio={"acodec": "aac", "b:a": "192k"})
    if failure is not None:
        raise RejectedInput(f"the audio cannot be carried into the masked video: {failure}")
    return "re-encoded to AAC (MP4 cannot hold the original audio codec)"


def _disguise() -> dict:
    """Pitch raised by a factor drawn anew for every run and recorded nowhere (a fixed, published factor
    would simply be undone), at the same speed: the words stay clear. Not anonymisation: see docs/processing.md."""
    factor = random.SystemRandom().uniform(1.25, 1.45)
    return {"af": f"rubberband=pitch={factor:.4f}", "acodec": "aac", "b:a": "192k"}


def _mux(video: Path, original: Path, demuxer: str, out: Path, tools: Tools, *, audio: dict) -> str | None:
    ours = ffmpeg.input(ffmpeg_cli.media_url(video), **ffmpeg_cli.input_options("mov", tools))
    theirs = ffmpeg.input(ffmpeg_cli.media_url(original), **ffmpeg_cli.input_options(demuxer, tools))
    stream = ffmpeg.output(
        ours["v:0"], theirs["a?"], f"file:{Path(out).resolve()}", vcodec="copy", map_metadata="-1",
        map_chapters="-1", fflags="+bitexact", **{"flags:a": "+bitexact"}, movflags="+faststart", f="mp4", **audio,
    )
    args = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-n", "-copyts").compile(cmd=tools.ffmpeg)
    done = ffmpeg_cli.run_tool(args, tools)
    if done.returncode != 0:
        return ffmpeg_cli.error_summary(done.stderr)
    return None
