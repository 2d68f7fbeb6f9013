"""The part of a transcript a clip holds, re-timed so that the clip's first frame is 0.

A segment the clip's edge cuts through keeps only the words whose middle
lies inside the clip, and says it was cut; one without word times is kept
whole and says so. Doubts and gaps keep their markers: a segment that
needs a person still says so in the excerpt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.export.clip import Range


def excerpt(segments: Sequence[Mapping[str, Any]], span: Range) -> list[dict[str, Any]]:
    """The segments overlapping ``span``, with times relative to its start and clamped to it."""
    kept = []
    for segment in segments:
        start, end = float(segment["start"]), float(segment["end"])
        if end <= span.start or start >= span.end:
            continue
        piece = {key: value for key, value in segment.items() if key != "words"}
        inside = span.start <= start and end <= span.end
        if not inside:
            piece["cut"] = True
            words = segment.get("words") or []
            if words and segment.get("text"):
                within = [w for w in words if span.start <= (w["start"] + w["end"]) / 2 < span.end]
                if not within:
                    continue
                piece["text"] = "".join(str(w["word"]) for w in within).strip()
        piece["start"] = round(max(start, span.start) - span.start, 3)
        piece["end"] = round(min(end, span.end) - span.start, 3)
        kept.append(piece)
    return kept
