"""Which language a chunk is in, and whether that is sure enough to hand it to a model for that language."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Identified:
    top: list[tuple[str, float]]   # the three likeliest languages (ISO 639-1, probability)
    sure: str | None               # the language, when its probability and margin pass the thresholds

    def to_json(self) -> list[dict]:
        return [{"language": code, "probability": round(p, 4)} for code, p in self.top]


def identify(scores: Sequence[tuple[str, float]], *, min_probability: float, min_margin: float) -> Identified:
    """``scores``: Whisper's (``<|xx|>`` token, probability) pairs, likeliest first."""
    top = [(token.strip("<|>"), float(p)) for token, p in list(scores)[:3]]
    first = top[0] if top else ("", 0.0)
    second = top[1][1] if len(top) > 1 else 0.0
    sure = first[0] if first[1] >= min_probability and first[1] - second >= min_margin else None
    return Identified(top, sure)
