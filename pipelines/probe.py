"""probe: is this an allowed, readable audio/video file, and what is in it?

Gates, cheapest first: the first bytes must look like an allowlisted
container (pipelines.sniff); an MP4/MOV must not take its media from other
files (pipelines.mp4_boxes); ffprobe, allowed only that container's demuxer
and the allowlisted decoders, lists the streams without decoding any, and
every stream must be allowed and every frame small enough
(pipelines.streams, ``media.max_pixels``); then ffprobe reads the stream
details and ffmpeg must decode the first and the last seconds. Anything else
is RejectedInput with a reason a person can act on.

Facts that identify people or places (creation time, device, GPS, and every
raw metadata tag) go to the ``restricted`` part of probe.json only: never to
run.json, logs or any derivative.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipelines import ffmpeg_cli, mp4_boxes, streams
from pipelines.errors import MediaRefused, RejectedInput
from pipelines.pipeline import DEFAULT_TOOLS, Param, StepContext, StepResult, Tools
from pipelines.sniff import MP4, Container, sniff_container

PARAMS: dict[str, Param] = {
    "max_duration_s": Param(12 * 3600.0, minimum=1, maximum=7 * 86400),
    "max_size_bytes": Param(256 * 2**30, minimum=1, maximum=2**50),
    "min_dimension": Param(16, minimum=1, maximum=65536),
    "max_dimension": Param(16384, minimum=1, maximum=65536),
    "decode_seconds": Param(3.0, minimum=0.5, maximum=600),
}
DEFAULTS: dict[str, Any] = {key: param.default for key, param in PARAMS.items()}

# Metadata keys that say when, where or with what a recording was made.
_CREATION_KEYS = ("creation_time", "com.apple.quicktime.creationdate", "date")
_MAKE_KEYS = ("com.apple.quicktime.make", "com.android.manufacturer", "make")
_MODEL_KEYS = ("com.apple.quicktime.model", "com.android.model", "model")
_SOFTWARE_KEYS = ("com.apple.quicktime.software", "com.android.version", "encoder")
_LOCATION_KEYS = ("location", "com.apple.quicktime.location.iso6709", "location-eng")

# A decoded window shorter than this share of what was asked for means the
# file ends early (truncated) or is damaged.
_MIN_DECODED_SHARE = 0.8
_VFR_WINDOW_S = 30


def _first_tag(tags: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    lowered = {key.lower(): value for key, value in tags.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _rate(text: str | None) -> float | None:
    if not text or "/" not in text:
        return None
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den) if float(den) else None
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _rotation(stream: Mapping[str, Any]) -> int:
    """Degrees, as ffprobe reports the stream's display matrix (0 when there is none)."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"])))
    return 0


def restricted_facts(report: Mapping[str, Any]) -> dict[str, Any]:
    """When, where and with what the recording was made, plus every raw tag."""
    format_tags = (report.get("format") or {}).get("tags") or {}
    stream_tags = [s.get("tags") or {} for s in report.get("streams", [])]
    every = [format_tags, *stream_tags]

    def pick(keys: tuple[str, ...]) -> str | None:
        return next((v for tags in every if (v := _first_tag(tags, keys)) is not None), None)

    return {
        "creation_time": pick(_CREATION_KEYS),
        "device": {"make": pick(_MAKE_KEYS), "model": pick(_MODEL_KEYS), "software": pick(_SOFTWARE_KEYS)},
        "location": pick(_LOCATION_KEYS),
        "tags": {"format": format_tags, "streams": stream_tags},
    }


def _stream_summary(stream: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "index": stream.get("index"),
        "type": stream.get("codec_type"),
        "codec": stream.get("codec_name"),
        "duration_s": _float(stream.get("duration")),
        "language": (stream.get("tags") or {}).get("language"),
        "cover_art": streams.is_cover_art(stream),
    }


def _check_frame_sizes(videos: list[dict], params: Mapping[str, Any], tools: Tools) -> None:
    for stream in videos:
        width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
        if not width or not height:
            continue  # the container does not say; the decoders' own -max_pixels cap still holds
        low, high = params["min_dimension"], params["max_dimension"]
        if min(width, height) < low or max(width, height) > high:
            raise RejectedInput(
                f"video is {width}x{height} pixels; accepted sizes are {low} to {high} pixels a side"
            )
        if width * height > tools.max_pixels:
            raise RejectedInput(
                f"stream {stream.get('index')}: a frame of {width}x{height} is {width * height:,} pixels; the limit"
                f" is media.max_pixels = {tools.max_pixels:,} (8K is 33,177,600), which keeps a decompression"
                " bomb from exhausting memory. If the recording is genuine, raise it ([media] max_pixels or"
                " EVIDENCE_MEDIA__MAX_PIXELS) and retry the job"
            )


def _inventory(path: Path, container: Container, params: Mapping[str, Any], tools: Tools) -> dict:
    """Every stream as the container declares it, before any frame is decoded; RejectedInput naming a bad one.

    ffprobe does not gather stream information here (no packet is decoded)
    and may open only allowlisted decoders, so it refuses a file with any
    other stream as a whole; ffmpeg's stream listing then names that stream.
    """
    try:
        report = ffmpeg_cli.ffprobe_json(path, demuxer=container.demuxer, tools=tools,
                                         extra=("-nofind_stream_info",), cap_pixels=False)
    except MediaRefused as exc:
        listed = {"streams": ffmpeg_cli.listed_streams(path, demuxer=container.demuxer, tools=tools)}
        streams.check_streams(listed, audio_only=container.audio_only)
        raise RejectedInput(f"it starts like {container.family} but cannot be read as one: {exc}") from exc
    streams.check_streams(report, audio_only=container.audio_only)
    videos, audios = streams.main_streams(report, audio_only=container.audio_only)
    if not videos and not audios:
        raise RejectedInput("the file has no audio or video stream")
    _check_frame_sizes(videos, params, tools)
    return report


def _layout_warnings(path: Path, container: Container) -> list[str]:
    """RejectedInput for an MP4/MOV whose media lives elsewhere; warnings for bytes after its end."""
    if container is not MP4:
        return []
    layout = mp4_boxes.read_layout(path)
    if layout.unreadable:
        raise RejectedInput("; ".join(layout.unreadable) + ": it is never opened")
    if layout.external_references:
        raise RejectedInput(
            "it refers to media outside itself, which is never opened: " + "; ".join(layout.external_references[:3])
        )
    if not layout.trailing_bytes:
        return []
    head = layout.trailing_head
    kind = " (a ZIP archive)" if head.startswith(b"PK\x03\x04") else ""
    return [f"{layout.trailing_bytes} bytes follow the end of the MP4 structure{kind}, starting {head.hex(' ')};"
            " they are kept in the original but are not part of the recording"]


def _aspect(text: Any, quarter_turn: bool) -> str:
    """"N:D" of a stream's sample aspect ratio, upright; "1:1" when it is unset ("0:1", "N/A")."""
    try:
        num, den = (int(part) for part in str(text).split(":"))
        ratio = Fraction(num, den)
    except (ValueError, ZeroDivisionError):
        return "1:1"
    if ratio == 0:
        return "1:1"
    if not Fraction(1, 16) <= ratio <= 16:
        raise RejectedInput(f"the video's pixels are {num}:{den} as wide as high: no camera records that")
    ratio = 1 / ratio if quarter_turn else ratio
    return f"{ratio.numerator}:{ratio.denominator}"


def _duration(report: Mapping[str, Any]) -> float:
    candidates = [_float((report.get("format") or {}).get("duration"))]
    candidates += [_float(s.get("duration")) for s in report.get("streams", [])]
    known = [c for c in candidates if c is not None and c > 0]
    if not known:
        raise RejectedInput("the file reports no duration; it is damaged or not a recording")
    return max(known)


def _variable_frame_rate(path: Path, container: Container, tools: Tools) -> bool | None:
    """Whether frame intervals in the first seconds differ by more than rounding."""
    report = ffmpeg_cli.ffprobe_json(
        path,
        demuxer=container.demuxer,
        tools=tools,
        show=("-show_entries", "packet=pts_time"),
        extra=("-select_streams", "v:0", "-read_intervals", f"%+{_VFR_WINDOW_S}"),
    )
    times = sorted(t for p in report.get("packets", []) if (t := _float(p.get("pts_time"))) is not None)
    deltas = [b - a for a, b in itertools.pairwise(times) if b > a]
    if len(deltas) < 3:
        return None
    typical = statistics.median(deltas)
    return max(deltas) - min(deltas) > max(0.002, 0.1 * typical)


def _decode_window(path: Path, container: Container, seconds: float, from_end: bool, tools: Tools) -> dict:
    args = ffmpeg_cli.decode_args(path, demuxer=container.demuxer, seconds=seconds, from_end=from_end, tools=tools)
    done = ffmpeg_cli.run_tool(args, tools)
    where = "last" if from_end else "first"
    if done.returncode != 0:
        raise RejectedInput(
            f"the {where} {seconds:g} s cannot be decoded: {ffmpeg_cli.error_summary(done.stderr)}"
        )
    progress = ffmpeg_cli.parse_progress(done.stdout)
    decoded_s = max(int(progress.get("out_time_us", "0") or 0), 0) / 1e6
    errors = ffmpeg_cli.error_lines(done.stderr)
    return {"decoded_s": round(decoded_s, 3), "frames": int(progress.get("frame", "0") or 0), "errors": errors}


def _check_decodes(path: Path, container: Container, duration: float, params, tools: Tools) -> tuple[dict, list[str]]:
    seconds = float(params["decode_seconds"])
    expected = min(seconds, duration)
    ends = {"head": False, "tail": True} if duration > seconds else {"head": False}
    # Both ends at once: each decoder is a child of its own, within the same limits.
    with ThreadPoolExecutor(len(ends), thread_name_prefix="probe-decode") as pool:
        pending = {name: pool.submit(_decode_window, path, container, seconds, from_end, tools)
                   for name, from_end in ends.items()}
        windows = {name: future.result() for name, future in pending.items()}
    for name, window in windows.items():
        if window["decoded_s"] < _MIN_DECODED_SHARE * expected:
            where = "first" if name == "head" else "last"
            detail = f" ({'; '.join(window['errors'][:3])})" if window["errors"] else ""
            raise RejectedInput(
                f"only {window['decoded_s']:g} s of the {where} {expected:g} s could be decoded: "
                f"the file is truncated or damaged{detail}"
            )
    warnings = [f"decoder reported: {line}" for window in windows.values() for line in window["errors"][:5]]
    summary = {name: {"decoded_s": w["decoded_s"], "frames": w["frames"]} for name, w in windows.items()}
    return summary, warnings


def probe_file(path: Path, params: Mapping[str, Any], tools: Tools = DEFAULT_TOOLS) -> tuple[dict, dict, list[str]]:
    """(public facts, restricted facts, warnings) for ``path``, or RejectedInput."""
    size = path.stat().st_size
    if size > params["max_size_bytes"]:
        raise RejectedInput(f"the file is {size} bytes; the limit is {params['max_size_bytes']} bytes")
    container = sniff_container(path)
    layout_warnings = _layout_warnings(path, container)
    _inventory(path, container, params, tools)
    try:
        report = ffmpeg_cli.ffprobe_json(path, demuxer=container.demuxer, tools=tools)
    except MediaRefused as exc:
        raise RejectedInput(
            f"it starts like {container.family} but its streams cannot be read: {exc}"
            f" (frames are decoded only up to media.max_pixels = {tools.max_pixels:,} pixels)"
        ) from exc
    streams.check_streams(report, audio_only=container.audio_only)  # what stream-information found, too
    videos, audios = streams.main_streams(report, audio_only=container.audio_only)
    _check_frame_sizes(videos, params, tools)
    duration = _duration(report)
    if duration > params["max_duration_s"]:
        raise RejectedInput(
            f"the recording is {duration:.0f} s long; the limit is {params['max_duration_s']:.0f} s"
        )
    decode, warnings = _check_decodes(path, container, duration, params, tools)
    warnings = layout_warnings + warnings

    video = None
    if videos:
        stream = videos[0]
        rotation = _rotation(stream)
        width, height = int(stream["width"]), int(stream["height"])
        quarter_turn = rotation % 180 != 0
        video = {
            "codec": stream.get("codec_name"),
            "profile": stream.get("profile"),
            "width": width,
            "height": height,
            "display_width": height if quarter_turn else width,
            "display_height": width if quarter_turn else height,
            "pix_fmt": stream.get("pix_fmt"),
            "rotation": rotation,
            # Pixels are not always square (anamorphic video): the picture a person sees is this much wider
            # than its pixels, in upright orientation (a quarter turn swaps the axes).
            "sample_aspect_ratio": _aspect(stream.get("sample_aspect_ratio"), quarter_turn),
            "frame_rate": _rate(stream.get("r_frame_rate")),
            "avg_frame_rate": _rate(stream.get("avg_frame_rate")),
            "variable_frame_rate": _variable_frame_rate(path, container, tools),
        }
    audio = None
    if audios:
        stream = audios[0]
        audio = {
            "codec": stream.get("codec_name"),
            "sample_rate": int(stream.get("sample_rate") or 0) or None,
            "channels": stream.get("channels"),
            "channel_layout": stream.get("channel_layout"),
        }
    fmt = report.get("format") or {}
    facts = {
        "container": container.family,
        "format_name": fmt.get("format_name"),
        "duration_s": round(duration, 3),
        "size_bytes": size,
        "bit_rate": int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        "has_video": video is not None,
        "has_audio": audio is not None,
        "video": video,
        "audio": audio,
        "streams": [_stream_summary(s) for s in report.get("streams", [])],
        "decode_check": decode,
    }
    return facts, restricted_facts(report), warnings


def run(ctx: StepContext) -> StepResult:
    facts, restricted, warnings = probe_file(ctx.original, ctx.params, ctx.tools)
    out = ctx.workdir / "probe.json"
    out.write_text(json.dumps({"facts": facts, "restricted": restricted}, indent=2, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    return StepResult(
        files={"probe.json": out},
        facts=facts,
        warnings=warnings,
        tools={name: ffmpeg_cli.tool_version(ctx.tools, cmd) for name, cmd in
               (("ffprobe", ctx.tools.ffprobe), ("ffmpeg", ctx.tools.ffmpeg))},
    )
