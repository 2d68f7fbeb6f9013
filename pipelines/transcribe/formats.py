"""The transcript as files: JSON (everything), WebVTT and SRT (subtitles), and plain text.

Outside square brackets the text files hold nothing but words a model heard;
everything else (times, doubts, gaps that need a person, which model wrote
what) is in brackets. Every file says that machine-made text is unverified
until a person checks it, and every segment says who made it: a transcript
travels (excerpts, exports), and a prosecutor must never take a model's
guess at a name or a number for a checked record.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.transcribe.flags import DRAFT, FLAGGED, HUMAN, MACHINE_MADE, NEEDS_HUMAN

SCHEMA = "evidence-worker/transcript/2"
NOTICE = ("Machine-made transcript: text marked 'machine' was written by a speech recognition model, named beside "
          "it, and is unverified until a person checks it against the recording; it can hold wrong words, names "
          "and numbers. 'needs human transcription' marks speech no model transcribed.")


def made_by(segments: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many segments a model wrote, a person wrote or checked, and are left for a person."""
    counts = Counter("machine" if s["status"] in MACHINE_MADE else "human" if s["status"] == HUMAN
                     else "needs_human" for s in segments)
    return {key: counts.get(key, 0) for key in ("machine", "human", "needs_human")}


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


def _maker(segment: Mapping[str, Any]) -> str:
    """Who wrote a segment's text, as its marker says it."""
    if segment["status"] == HUMAN:
        return "checked by a person"
    return f"machine, unverified: {segment.get('model') or 'unknown model'}"


def line(segment: Mapping[str, Any]) -> str:
    """One segment as a line of the plain-text transcript."""
    return _edge(segment) + _line(segment)


def _line(segment: Mapping[str, Any]) -> str:
    status = segment["status"]
    if status == NEEDS_HUMAN:
        return f"[needs human transcription {_span(segment)}{_label(segment)}]"
    if status == DRAFT:
        return f"[unverified machine draft {_span(segment)}{_label(segment)}; {_maker(segment)}] {segment['text']}"
    if status == FLAGGED:
        checks = ", ".join(f.replace("_", " ") for f in segment["flags"])
        return f"[{_span(segment)} {_maker(segment)}; check: {checks}] {segment['text']}"
    return f"[{_span(segment)} {_maker(segment)}] {segment['text']}"


def _cue_text(segment: Mapping[str, Any]) -> str:
    return _edge(segment) + _cue(segment)


def _cue(segment: Mapping[str, Any]) -> str:
    if segment["status"] == NEEDS_HUMAN:
        return f"[needs human transcription{_label(segment)}]"
    if segment["status"] == DRAFT:
        return f"[unverified machine draft{_label(segment)}; {_maker(segment)}] {segment['text']}"
    if segment["status"] == FLAGGED:
        return f"[{_maker(segment)}; check] {segment['text']}"
    return f"[{_maker(segment)}] {segment['text']}"


def _models(segments: Sequence[Mapping[str, Any]]) -> str:
    names = sorted({str(s["model"]) for s in segments if s.get("model") and s["status"] in MACHINE_MADE})
    return ", ".join(names) or "none"


def vtt(segments: Sequence[Mapping[str, Any]]) -> str:
    """WebVTT subtitles: a NOTE saying what made them, then one cue a segment, with the same markers as the text."""
    counts = made_by(segments)
    cues = ["WEBVTT", "", "NOTE", NOTICE.replace("-->", "->"),
            f"Models: {_models(segments)}. Segments: {counts['machine']} machine-made, {counts['human']} checked "
            f"by a person, {counts['needs_human']} need human transcription.", ""]
    for segment in segments:
        cues += [f"{_clock(segment['start'])} --> {_clock(segment['end'])}", _cue_text(segment), ""]
    return "\n".join(cues)


def srt(segments: Sequence[Mapping[str, Any]]) -> str:
    """SubRip subtitles, which have no comments: each cue's marker says who made it."""
    cues = []
    for number, segment in enumerate(segments, start=1):
        cues += [str(number), f"{_clock(segment['start'], True)} --> {_clock(segment['end'], True)}",
                 _cue_text(segment), ""]
    return "\n".join(cues)


def text(segments: Sequence[Mapping[str, Any]], empty: str = "[no speech found]") -> str:
    """The plain-text transcript: what made it, then one line a segment, ``empty`` when there is none."""
    head = [f"[{NOTICE}]", f"[models: {_models(segments)}]"]
    return "\n".join(head + ([line(segment) for segment in segments] or [empty])) + "\n"


def write(folder: Path, transcript: Mapping[str, Any]) -> dict[str, Path]:
    """transcript.json, .vtt, .srt and .txt in ``folder``; their paths by output name."""
    segments: Sequence[Mapping[str, Any]] = transcript["segments"]
    paths = {name: folder / name for name in ("transcript.json", "transcript.vtt", "transcript.srt",
                                              "transcript.txt")}
    marked = {**transcript, "notice": NOTICE,
              "segments": [{**s, "made_by": "human" if s["status"] == HUMAN else
                            "machine" if s["status"] in MACHINE_MADE else None,
                            "verified": s["status"] == HUMAN} for s in segments]}
    paths["transcript.json"].write_text(
        json.dumps(marked, ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    paths["transcript.vtt"].write_text(vtt(segments), encoding="utf-8")
    paths["transcript.srt"].write_text(srt(segments), encoding="utf-8")
    empty = "[no speech found]" if transcript.get("audio", True) else "[no audio stream: nothing to transcribe]"
    paths["transcript.txt"].write_text(text(segments, empty), encoding="utf-8")
    return paths
