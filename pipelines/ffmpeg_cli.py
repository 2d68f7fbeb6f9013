"""Running ffmpeg and ffprobe safely.

Every call is an argument list (never a shell), reads only through the
``file`` and ``pipe`` protocols, names the one demuxer the caller allows, and
has a timeout. Paths are passed as ``file:<absolute path>`` so that no file
name can be read as an option (``-i``), a protocol (``concat:``, ``http:``) or
a relative path.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import ffmpeg

from pipelines.errors import MediaRefused, MediaToolError

PROTOCOL_WHITELIST = "file,pipe"


def media_url(path: Path) -> str:
    return "file:" + str(Path(path).resolve())


def run_tool(args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess:
    """Run a media tool; raise MediaToolError when it cannot be run or overruns.

    A non-zero exit status is returned, not raised: callers know which
    failures mean "bad input" and which mean "tool trouble".
    """
    try:
        return subprocess.run(
            list(args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            # Own session: a Ctrl-C on the worker's terminal must reach the
            # worker (which decides to finish or release the job), not kill
            # the tool half-way through a step.
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaToolError(f"{Path(args[0]).name} ran longer than {timeout:g} s and was stopped") from exc
    except OSError as exc:
        raise MediaToolError(f"cannot run {args[0]}: {exc.strerror or exc}") from exc


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
    show: Sequence[str] = ("-show_format", "-show_streams"),
    extra: Sequence[str] = (),
    ffprobe_cmd: str = "ffprobe",
    timeout: float,
) -> dict:
    """ffprobe's JSON report on ``path``, read with ``demuxer`` only.

    ffmpeg-python's own ``probe`` helper takes no timeout, so the (fixed)
    argument list is written out here.
    """
    args = [
        ffprobe_cmd, "-hide_banner", "-v", "error",
        "-protocol_whitelist", PROTOCOL_WHITELIST,
        "-format_whitelist", demuxer,
        *show, *extra, "-of", "json", media_url(path),
    ]
    done = run_tool(args, timeout=timeout)
    if done.returncode != 0:
        raise MediaRefused(error_summary(done.stderr))
    try:
        return json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError as exc:
        raise MediaToolError(f"ffprobe printed something that is not JSON: {exc}") from exc


def decode_args(
    path: Path,
    *,
    demuxer: str,
    seconds: float,
    from_end: bool = False,
    ffmpeg_cmd: str = "ffmpeg",
) -> list[str]:
    """ffmpeg arguments that decode ``seconds`` of every default stream and discard them.

    ``-progress pipe:1`` makes ffmpeg report how many frames and how much time
    it actually decoded, so an empty or undecodable stream cannot pass.
    """
    input_options = {
        "protocol_whitelist": PROTOCOL_WHITELIST,
        "format_whitelist": demuxer,
        "t": f"{seconds:g}",
    }
    if from_end:
        input_options["sseof"] = f"-{seconds:g}"
    stream = ffmpeg.input(media_url(path), **input_options).output("-", f="null")
    stream = stream.global_args("-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1")
    return stream.compile(cmd=ffmpeg_cmd)


def parse_progress(stdout: bytes) -> dict[str, str]:
    """The last value of each key in ffmpeg's ``-progress`` output."""
    values: dict[str, str] = {}
    for line in stdout.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


@functools.lru_cache(maxsize=None)
def tool_version(cmd: str) -> str:
    """First line of ``<tool> -version``, for run records."""
    try:
        done = run_tool([cmd, "-version"], timeout=30)
    except MediaToolError as exc:
        return f"unavailable ({exc})"
    first = done.stdout.decode("utf-8", "replace").splitlines()
    return first[0].strip() if first else "unknown"
