"""Every second of speech accounted for: each stretch that voice detection calls speech lies in exactly
one transcript segment (machine text, a draft of another model, or a gap marked for a person).

Times are seconds in the original recording. Decoders skip speech they do
not understand (a language switch inside a chunk, a word stretched over a
foreign sentence, a decoder that stops early); what they skipped is found
here, by subtracting what the segments cover from what was speech, instead
of being trusted to show up in their output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Span = tuple[float, float]

# Uncovered speech up to this much between two segments is the slack of word timing, not lost words.
TOLERANCE_S = 0.5
_EPSILON_S = 0.01
_JOIN_S = 1.0


class AccountingError(RuntimeError):
    """The transcript does not account for the speech: a defect of this software, never of the input."""

    retryable = False


def merged(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def total(spans: Iterable[Span]) -> float:
    return sum(end - start for start, end in spans)


def intersection(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Where two sets of merged spans overlap."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _gaps(covered: Sequence[Span], start: float, end: float) -> list[Span]:
    edges = [start, *[x for span in covered for x in span], end]
    return [(edges[k], edges[k + 1]) for k in range(0, len(edges), 2) if edges[k + 1] > edges[k]]


def uncovered(speech: Sequence[Span], segments: Sequence[Mapping[str, Any]],
              tolerance: float = TOLERANCE_S) -> list[Span]:
    """Stretches of speech no segment covers, each holding more than ``tolerance`` seconds of speech.

    Between two segments, speech less than _JOIN_S apart is one stretch (the
    words of one utterance); the tail of a word a segment ends a little early
    on is not joined to an utterance a pause later.
    """
    speech = merged(speech)
    if not speech:
        return []
    covered = intersection(merged((s["start"], s["end"]) for s in segments), [(speech[0][0], speech[-1][1])])
    found = []
    for gap in _gaps(covered, speech[0][0], speech[-1][1]):
        stretches: list[list[Span]] = []
        for piece in intersection(speech, [gap]):
            if stretches and piece[0] - stretches[-1][-1][1] < _JOIN_S:
                stretches[-1].append(piece)
            else:
                stretches.append([piece])
        found += [(pieces[0][0], pieces[-1][1]) for pieces in stretches if total(pieces) > tolerance]
    return found


def overlaps(segments: Sequence[Mapping[str, Any]]) -> list[Span]:
    ordered = sorted((s["start"], s["end"]) for s in segments)
    return [(b[0], a[1]) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1] - _EPSILON_S]


def close(speech: Sequence[Span], segments: Sequence[Mapping[str, Any]],
          tolerance: float = TOLERANCE_S) -> dict[str, float]:
    """The account of the speech, or AccountingError naming what it does not account for."""
    speech = merged(speech)
    lost = uncovered(speech, segments, tolerance)
    twice = overlaps(segments)
    if lost or twice:
        raise AccountingError(
            "the transcript does not account for every second of speech: "
            + "; ".join([f"speech at {a:.2f}-{b:.2f} s is in no segment" for a, b in lost]
                        + [f"{a:.2f}-{b:.2f} s is in two segments" for a, b in twice]))
    speech_s = total(speech)
    covered_s = total(intersection(speech, merged((s["start"], s["end"]) for s in segments)))
    by_status: dict[str, float] = {}
    for segment in segments:
        inside = total(intersection(speech, [(segment["start"], segment["end"])]))
        by_status[segment["status"]] = by_status.get(segment["status"], 0.0) + inside
    return {"speech_s": round(speech_s, 1), "covered_s": round(covered_s, 1),
            "unaccounted_s": round(speech_s - covered_s, 1),
            "speech_by_status_s": {k: round(v, 1) for k, v in sorted(by_status.items())}}
