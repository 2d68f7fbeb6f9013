"""Recognise an allowlisted container from its first bytes, before any media tool reads it.

This is the first gate of the probe: a playlist, a concat script or anything
else that could make ffmpeg open other files is refused here and never
reaches ffprobe. The demuxer named here is then the only one ffprobe and
ffmpeg may use (``-format_whitelist``), so the two gates must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import RejectedInput

HEAD_BYTES = 4096

_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
_TS_PACKET = 188


@dataclass(frozen=True)
class Container:
    family: str      # what we call it in facts and errors
    demuxer: str     # the one ffmpeg demuxer allowed to read it
    audio_only: bool  # an audio recorder's format: video streams there are cover art


MP4 = Container("mp4/mov/3gp/m4a", "mov", False)
MATROSKA = Container("matroska/webm", "matroska", False)
AVI = Container("avi", "avi", False)
MPEGTS = Container("mpeg-ts (mts/m2ts)", "mpegts", False)
WAV = Container("wav", "wav", True)
FLAC = Container("flac", "flac", True)
MP3 = Container("mp3", "mp3", True)
OGG = Container("ogg", "ogg", False)


def _is_ts(head: bytes, offset: int, stride: int) -> bool:
    positions = [offset + k * stride for k in range(3)]
    return len(head) > positions[-1] and all(head[p] == 0x47 for p in positions)


def _explain_unknown(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    lowered = text[:64].lower()
    if lowered.startswith(b"#extm3u") or lowered.startswith(b"#ext-x"):
        return "an HLS/M3U playlist; playlists point at other files or URLs and are never followed"
    if lowered.startswith(b"ffconcat"):
        return "an ffmpeg concat script; scripts point at other files and are never followed"
    if lowered.startswith(b"[playlist]"):
        return "a PLS playlist; playlists point at other files or URLs and are never followed"
    if lowered.startswith(b"<?xml") or lowered.startswith(b"<mpd") or lowered.startswith(b"<smil"):
        return "an XML document (a DASH/SMIL manifest or similar), not a media file"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(ch.isprintable() or ch in "\r\n\t" for ch in decoded):
        return "a text file, not a media file"
    return f"not an allowed audio/video container (first bytes: {head[:12].hex(' ')})"


def sniff_container(path: Path) -> Container:
    """The allowlisted container ``path`` starts like, or RejectedInput saying what it is instead."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise RejectedInput("the file is empty (0 bytes)")
    if len(head) >= 8 and head[4:8] in _MP4_FIRST_BOXES:
        return MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return MATROSKA
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"AVI ":
        return AVI
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return WAV
    if _is_ts(head, 0, _TS_PACKET) or _is_ts(head, 4, _TS_PACKET + 4):
        return MPEGTS
    if head.startswith(b"fLaC"):
        return FLAC
    if head.startswith(b"OggS"):
        return OGG
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return MP3
    raise RejectedInput(f"the file is {_explain_unknown(head)}")
