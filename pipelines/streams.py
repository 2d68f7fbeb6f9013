"""Which streams a file may hold, and which decoders may ever run on them.

Every stream ffprobe lists is judged here: video, audio, subtitles, cover art,
attachments and data. A stream that is not allowed is named in the reason
("stream 2: attached picture 'tiff' is not on the allowlist"). The decoders
that may run at all are passed to ffprobe and ffmpeg as ``-codec_whitelist``,
so a stream the allowlist does not know can never reach a decoder, not even
while ffprobe gathers stream information.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.errors import RejectedInput

# codec name (as ffprobe reports it) -> the FFmpeg decoders that decode it.
# Codecs that field cameras, phones and audio recorders actually write.
VIDEO_DECODERS: dict[str, tuple[str, ...]] = {
    "h264": ("h264",), "hevc": ("hevc",), "mpeg4": ("mpeg4",), "mpeg2video": ("mpeg2video", "mpegvideo"),
    "mpeg1video": ("mpeg1video",), "mjpeg": ("mjpeg",), "vp8": ("vp8", "libvpx"), "vp9": ("vp9", "libvpx-vp9"),
    "av1": ("libdav1d", "libaom-av1", "av1"), "dvvideo": ("dvvideo",), "h263": ("h263", "h263p"),
    "prores": ("prores",), "ffv1": ("ffv1",), "theora": ("theora",), "msmpeg4v2": ("msmpeg4v2",),
    "msmpeg4v3": ("msmpeg4",),
}
AUDIO_DECODERS: dict[str, tuple[str, ...]] = {
    "aac": ("aac", "aac_fixed"), "mp3": ("mp3float", "mp3"), "mp2": ("mp2float", "mp2"),
    "ac3": ("ac3", "ac3_fixed"), "eac3": ("eac3",), "opus": ("opus", "libopus"), "vorbis": ("vorbis", "libvorbis"),
    "flac": ("flac",), "alac": ("alac",), "amr_nb": ("amrnb",), "amr_wb": ("amrwb",),
    "adpcm_ima_wav": ("adpcm_ima_wav",), "gsm_ms": ("gsm_ms",),
    **{name: (name,) for name in (
        "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_u8",
        "pcm_mulaw", "pcm_alaw", "pcm_bluray", "pcm_dvd",
    )},
}
# Pictures an audio recorder or phone attaches as cover art; nothing else may hide there.
COVER_ART_DECODERS: dict[str, tuple[str, ...]] = {"mjpeg": ("mjpeg",), "png": ("png",)}
# Subtitle tracks some cameras and phones write; they are listed, never rendered.
SUBTITLE_DECODERS: dict[str, tuple[str, ...]] = {
    "mov_text": ("mov_text",), "subrip": ("subrip", "srt"), "webvtt": ("webvtt",),
    "dvd_subtitle": ("dvdsub",), "dvb_subtitle": ("dvbsub",), "hdmv_pgs_subtitle": ("pgssub",),
}
# Attachments FFmpeg never decodes (fonts that Matroska files carry for their subtitles).
INERT_ATTACHMENTS = frozenset({"ttf", "otf"})


def codec_whitelist() -> str:
    """Every decoder that may run, for ``-codec_whitelist``."""
    names = {d for table in (VIDEO_DECODERS, AUDIO_DECODERS, COVER_ART_DECODERS, SUBTITLE_DECODERS)
             for decoders in table.values() for d in decoders}
    return ",".join(sorted(names))


def is_cover_art(stream: Mapping[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _judge(stream: Mapping[str, Any], audio_only: bool) -> str | None:
    """Why ``stream`` is not allowed, or None."""
    kind, codec = stream.get("codec_type"), stream.get("codec_name")
    if kind == "video" and is_cover_art(stream):
        return None if codec in COVER_ART_DECODERS else f"attached picture {codec!r} is not on the allowlist"
    if kind == "video":
        if audio_only:
            return f"video {codec!r} in an audio-only container is allowed only as cover art"
        return None if codec in VIDEO_DECODERS else f"video codec {codec!r} is not on the allowlist"
    if kind == "audio":
        return None if codec in AUDIO_DECODERS else f"audio codec {codec!r} is not on the allowlist"
    if kind == "subtitle":
        return None if codec in SUBTITLE_DECODERS else f"subtitle codec {codec!r} is not on the allowlist"
    if kind == "attachment":
        return None if codec in INERT_ATTACHMENTS else f"attachment {codec!r} is not on the allowlist"
    # Timecode, GPS and sensor tracks, and streams whose kind the container does not declare:
    # FFmpeg has no decoder for what it cannot name, so nothing runs on them.
    return None


def check_streams(report: Mapping[str, Any], *, audio_only: bool) -> None:
    """RejectedInput naming the first stream that is not allowed."""
    for position, stream in enumerate(report.get("streams", [])):
        reason = _judge(stream, audio_only)
        if reason is not None:
            raise RejectedInput(f"stream {stream.get('index', position)}: {reason}")


def main_streams(report: Mapping[str, Any], *, audio_only: bool) -> tuple[list[dict], list[dict]]:
    """(the video streams that are pictures of the recording, the audio streams)."""
    streams = report.get("streams", [])
    videos = [] if audio_only else [s for s in streams if s.get("codec_type") == "video" and not is_cover_art(s)]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    return videos, audios
