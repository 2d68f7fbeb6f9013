"""probe: is this an allowed, readable audio/video file, and what is in it?

Three gates, cheapest first: the first bytes must look like an allowlisted
container (pipelines.sniff); ffprobe, allowed only that container's demuxer,
must read it; ffmpeg must decode the first and the last seconds. Anything
else is RejectedInput with a reason a person can act on.

Facts that identify people or places (creation time, device, GPS, and every
raw metadata tag) go to the ``restricted`` part of probe.json only: never to
run.json, logs or any derivative.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines import ffmpeg_cli
from pipelines.errors import MediaRefused, RejectedInput
from pipelines.pipeline import DEFAULT_TOOLS, StepContext, StepResult, Tools
from pipelines.sniff import Container, sniff_container

DEFAULTS: dict[str, Any] = {
    "max_duration_s": 12 * 3600.0,
    "max_size_bytes": 256 * 2**30,
    "min_dimension": 16,
    "max_dimension": 16384,
    "decode_seconds": 3.0,
}

# Codecs that field cameras, phones and audio recorders actually write.
VIDEO_CODECS = frozenset({
    "h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "vp8", "vp9", "av1",
    "dvvideo", "h263", "prores", "ffv1", "theora", "msmpeg4v2", "msmpeg4v3",
})
AUDIO_CODECS = frozenset({
    "aac", "mp3", "mp2", "ac3", "eac3", "opus", "vorbis", "flac", "alac", "amr_nb", "amr_wb",
    "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_u8",
    "pcm_mulaw", "pcm_alaw", "pcm_bluray", "pcm_dvd", "adpcm_ima_wav", "gsm_ms",
})

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


def _is_cover_art(stream: Mapping[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


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
        "cover_art": _is_cover_art(stream),
    }


def _check_streams(report: Mapping[str, Any], container: Container, params: Mapping[str, Any]):
    streams = report.get("streams", [])
    videos = [s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if container.audio_only:
        videos = []
    if not videos and not audios:
        raise RejectedInput("the file has no audio or video stream")
    for stream in videos:
        codec = stream.get("codec_name")
        if codec not in VIDEO_CODECS:
            raise RejectedInput(f"video codec {codec!r} is not on the allowlist")
        width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
        low, high = params["min_dimension"], params["max_dimension"]
        if min(width, height) < low or max(width, height) > high:
            raise RejectedInput(
                f"video is {width}x{height} pixels; accepted sizes are {low} to {high} pixels a side"
            )
    for stream in audios:
        codec = stream.get("codec_name")
        if codec not in AUDIO_CODECS:
            raise RejectedInput(f"audio codec {codec!r} is not on the allowlist")
    return videos, audios


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
        show=("-show_entries", "packet=pts_time"),
        extra=("-select_streams", "v:0", "-read_intervals", f"%+{_VFR_WINDOW_S}"),
        ffprobe_cmd=tools.ffprobe,
        timeout=tools.timeout_s,
    )
    times = sorted(t for p in report.get("packets", []) if (t := _float(p.get("pts_time"))) is not None)
    deltas = [b - a for a, b in itertools.pairwise(times) if b > a]
    if len(deltas) < 3:
        return None
    typical = statistics.median(deltas)
    return max(deltas) - min(deltas) > max(0.002, 0.1 * typical)


def _decode_window(path: Path, container: Container, seconds: float, from_end: bool, tools: Tools) -> dict:
    args = ffmpeg_cli.decode_args(
        path, demuxer=container.demuxer, seconds=seconds, from_end=from_end, ffmpeg_cmd=tools.ffmpeg
    )
    done = ffmpeg_cli.run_tool(args, timeout=tools.timeout_s)
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
    windows = {"head": _decode_window(path, container, seconds, False, tools)}
    if duration > seconds:
        windows["tail"] = _decode_window(path, container, seconds, True, tools)
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
    try:
        report = ffmpeg_cli.ffprobe_json(
            path, demuxer=container.demuxer,
            show=("-show_format", "-show_streams"), ffprobe_cmd=tools.ffprobe, timeout=tools.timeout_s,
        )
    except MediaRefused as exc:
        raise RejectedInput(f"it starts like {container.family} but cannot be read as one: {exc}") from exc
    videos, audios = _check_streams(report, container, params)
    duration = _duration(report)
    if duration > params["max_duration_s"]:
        raise RejectedInput(
            f"the recording is {duration:.0f} s long; the limit is {params['max_duration_s']:.0f} s"
        )
    decode, warnings = _check_decodes(path, container, duration, params, tools)

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
        tools={name: ffmpeg_cli.tool_version(cmd) for name, cmd in
               (("ffprobe", ctx.tools.ffprobe), ("ffmpeg", ctx.tools.ffmpeg))},
    )
