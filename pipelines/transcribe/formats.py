"""The transcript as files: JSON (everything), WebVTT and SRT (subtitles), and plain text.

Outside square brackets the text files hold nothing but words a model heard;
everything else (times, doubts, gaps that need a person) is in brackets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = "evidence-worker/transcript/1"


def _clock(seconds: float, comma: bool = False) -> str:
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"
    return text.replace(".", ",") if comma else text


def _span(segment: Mapping[str, Any]) -> str:
    return f"{_clock(segment['start'])[:8]}–{_clock(segment['end'])[:8]}"


def _label(segment: Mapping[str, Any]) -> str:
    return f", {segment['label']}" if segment.get("label") else ""


def _edge(segment: Mapping[str, Any]) -> str:
    # An excerpt's segment that an end of the clip cuts through keeps only the words inside the clip.
    return "[cut at the clip's edge] " if segment.get("cut") else ""


def line(segment: Mapping[str, Any]) -> str:
    """One segment as a line of the plain-text transcript."""
    return _edge(segment) + _line(segment)


def _line(segment: Mapping[str, Any]) -> str:
    status = segment["status"]
    if status == "needs_human":
        return f"[needs human transcription {_span(segment)}{_label(segment)}]"
    if status == "draft_other_model":
        return f"[unverified machine draft {_span(segment)}{_label(segment)}] {segment['text']}"
    if status == "machine_flagged":
        return f"[{_span(segment)} check: {', '.join(f.replace('_', ' ') for f in segment['flags'])}] {segment['text']}"
    return f"[{_span(segment)}] {segment['text']}"


def _cue_text(segment: Mapping[str, Any]) -> str:
    return _edge(segment) + _cue(segment)


def _cue(segment: Mapping[str, Any]) -> str:
    if segment["status"] == "needs_human":
        return f"[needs human transcription{_label(segment)}]"
    if segment["status"] == "draft_other_model":
        return f"[unverified machine draft{_label(segment)}] {segment['text']}"
    if segment["status"] == "machine_flagged":
        return f"[check] {segment['text']}"
    return segment["text"]


def vtt(segments: Sequence[Mapping[str, Any]]) -> str:
    """WebVTT subtitles: one cue a segment, with the same markers as the text."""
    cues = ["WEBVTT", ""]
    for segment in segments:
        cues += [f"{_clock(segment['start'])} --> {_clock(segment['end'])}", _cue_text(segment), ""]
    return "\n".join(cues)


def text(segments: Sequence[Mapping[str, Any]], empty: str = "[no speech found]") -> str:
    """The plain-text transcript: one line a segment, ``empty`` when there is none."""
    return "\n".join([line(segment) for segment in segments] or [empty]) + "\n"


def write(folder: Path, transcript: Mapping[str, Any]) -> dict[str, Path]:
    """transcript.json, .vtt, .srt and .txt in ``folder``; their paths by output name."""
    segments: Sequence[Mapping[str, Any]] = transcript["segments"]
    paths = {name: folder / name for name in ("transcript.json", "transcript.vtt", "transcript.srt",
                                              "transcript.txt")}
    paths["transcript.json"].write_text(
        json.dumps(transcript, ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    srt = []
    for number, segment in enumerate(segments, start=1):
        srt += [str(number), f"{_clock(segment['start'], True)} --> {_clock(segment['end'], True)}",
                _cue_text(segment), ""]
    paths["transcript.vtt"].write_text(vtt(segments), encoding="utf-8")
    paths["transcript.srt"].write_text("\n".join(srt), encoding="utf-8")
    empty = "[no speech found]" if transcript.get("audio", True) else "[no audio stream: nothing to transcribe]"
    paths["transcript.txt"].write_text(text(segments, empty), encoding="utf-8")
    return paths
