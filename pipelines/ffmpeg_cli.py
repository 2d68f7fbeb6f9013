"""Running ffmpeg and ffprobe safely.

Every call is an argument list (never a shell), reads only through the
``file`` and ``pipe`` protocols, names the one demuxer the caller allows and
the decoders that may run (``-codec_whitelist``), caps the pixels of a frame
(``-max_pixels``) and the threads, and runs under a memory ceiling and a
timeout, dying with the worker (pipelines.child). Paths are passed as
``file:<absolute path>`` so that no file name can be read as an option
(``-i``), a protocol (``concat:``, ``http:``) or a relative path.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import ffmpeg

from pipelines import child, streams
from pipelines.errors import MediaRefused, MediaToolError, NoSpace, OverMemoryCeiling
from pipelines.pipeline import Tools

PROTOCOL_WHITELIST = "file,pipe"
# How FFmpeg reports an allocation that failed (under the memory ceiling, that is the ceiling); the C
# library's text for ENOMEM, and the decoders' own words when a frame buffer cannot be had. A frame
# refused for its size says so too, and is not a memory problem. These only word the reason: the
# ceiling and the pixel cap protect either way.
_ALLOCATION_FAILED = (os.strerror(errno.ENOMEM), "get_buffer() failed", "Could not allocate", "Failed to allocate")
_NOT_MEMORY = ("exceeds specified max pixel count", "image parameters invalid")
NO_SPACE = os.strerror(errno.ENOSPC)


def media_url(path: Path) -> str:
    return "file:" + str(Path(path).resolve())


def input_options(demuxer: str, tools: Tools, *, cap_pixels: bool = True) -> dict[str, str]:
    """The options every input gets: one demuxer, allowlisted decoders, bounded threads and frame size."""
    options = {
        "protocol_whitelist": PROTOCOL_WHITELIST,
        "format_whitelist": demuxer,
        "codec_whitelist": streams.codec_whitelist(),
        "threads": str(tools.threads),
    }
    if cap_pixels:
        options["max_pixels"] = str(tools.max_pixels)
    return options


def _flags(options: dict[str, str]) -> list[str]:
    return [item for key, value in options.items() for item in (f"-{key}", value)]


def run_tool(args: Sequence[str], tools: Tools) -> subprocess.CompletedProcess:
    """Run a media tool under the limits in ``tools``; MediaToolError when it cannot run or overruns.

    A non-zero exit status is returned, not raised: callers know which
    failures mean "bad input" and which mean "tool trouble". A tool that ran
    out of memory under the ceiling raises OverMemoryCeiling, which names the
    setting to raise.
    """
    name = Path(args[0]).name
    try:
        done = child.run(args, child.Limits(timeout_s=tools.timeout_s, memory_bytes=tools.memory_limit_bytes))
    except subprocess.TimeoutExpired as exc:
        raise MediaToolError(f"{name} ran longer than media.timeout_s = {tools.timeout_s:g} s and was stopped") from exc
    except OSError as exc:
        raise MediaToolError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc
    stderr = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0 and NO_SPACE in stderr:
        raise NoSpace(f"{name} could not write its output: the disk is full")
    if any(marker in stderr for marker in _ALLOCATION_FAILED) and not any(m in stderr for m in _NOT_MEMORY):
        raise OverMemoryCeiling(
            f"{name} ran out of memory under the ceiling media.memory_limit_bytes = {tools.memory_limit_bytes}"
            f" ({tools.threads} threads); if the file is genuine, raise it ([media] memory_limit_bytes or"
            " EVIDENCE_MEDIA__MEMORY_LIMIT_BYTES), or lower media.threads, and retry the job"
            " ('evidence dead-letters --retry JOB')"
        )
    if done.returncode < 0:
        raise MediaToolError(f"{name} crashed (signal {-done.returncode}) under the ceiling"
                             f" media.memory_limit_bytes = {tools.memory_limit_bytes}")
    return done


_CONTEXT_PREFIX = re.compile(r"^(\[[^\]]+ @ 0x[0-9a-f]+\] |file:[^:]*: )")


def error_lines(stderr: bytes) -> list[str]:
    """The tool's distinct error lines, without its "[demuxer @ 0x...]" and path prefixes."""
    seen: list[str] = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = _CONTEXT_PREFIX.sub("", line.strip())
        if line and line not in seen:
            seen.append(line)
    return seen


def error_summary(stderr: bytes, limit: int = 3) -> str:
    return "; ".join(error_lines(stderr)[:limit]) or "no error message"


def ffprobe_json(
    path: Path,
    *,
    demuxer: str,
    tools: Tools,
    show: Sequence[str] = ("-show_format", "-show_streams"),
    extra: Sequence[str] = (),
    cap_pixels: bool = True,
) -> dict:
    """ffprobe's JSON report on ``path``, read with ``demuxer`` and allowlisted decoders only.

    ffmpeg-python's own ``probe`` helper takes no timeout, so the (fixed)
    argument list is written out here.
    """
    args = [
        tools.ffprobe, "-hide_banner", "-v", "error",
        *_flags(input_options(demuxer, tools, cap_pixels=cap_pixels)),
        *show, *extra, "-of", "json", media_url(path),
    ]
    done = run_tool(args, tools)
    if done.returncode != 0:
        raise MediaRefused(error_summary(done.stderr))
    try:
        return json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise MediaToolError(f"ffprobe printed something that is not JSON: {exc}") from exc


_DUMPED_STREAM = re.compile(r"^\s*Stream #\d+:(\d+)(?:\[0x[0-9a-f]+\])?(?:\([^)]*\))?: (\w+): (\w+)(.*)$")


def listed_streams(path: Path, *, demuxer: str, tools: Tools) -> list[dict]:
    """The streams ffmpeg lists when it opens ``path`` (only allowlisted decoders may run meanwhile).

    For naming a stream in a refusal after ffprobe refused the file as a
    whole: ffprobe stops at the first decoder it may not open, before it
    prints anything. This only words the reason; the refusal stands anyway.
    """
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", *_flags(input_options(demuxer, tools)), "-i", media_url(path)]
    listed = []
    for line in run_tool(args, tools).stderr.decode("utf-8", "replace").splitlines():
        match = _DUMPED_STREAM.match(line)
        if match:
            index, kind, codec, rest = match.groups()
            listed.append({"index": int(index), "codec_type": kind.lower(), "codec_name": codec,
                           "disposition": {"attached_pic": int("(attached pic)" in rest)}})
    return listed


def decode_args(
    path: Path,
    *,
    demuxer: str,
    seconds: float,
    tools: Tools,
    from_end: bool = False,
) -> list[str]:
    """ffmpeg arguments that decode ``seconds`` of every default stream and discard them.

    ``-progress pipe:1`` makes ffmpeg report how many frames and how much time
    it actually decoded, so an empty or undecodable stream cannot pass.
    """
    options = {**input_options(demuxer, tools), "t": f"{seconds:g}"}
    if from_end:
        options["sseof"] = f"-{seconds:g}"
    stream = ffmpeg.input(media_url(path), **options).output("-", f="null")
    stream = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1")
    return stream.compile(cmd=tools.ffmpeg)


def parse_progress(stdout: bytes) -> dict[str, str]:
    """The last value of each key in ffmpeg's ``-progress`` output."""
    values: dict[str, str] = {}
    for line in stdout.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


@functools.lru_cache(maxsize=None)
def tool_version(tools: Tools, cmd: str) -> str:
    """First line of ``<tool> -version``, for run records."""
    try:
        done = run_tool([cmd, "-version"], tools)
    except MediaToolError as exc:
        return f"unavailable ({exc})"
    first = done.stdout.decode("utf-8", "replace").splitlines()
    return first[0].strip() if first else "unknown"
