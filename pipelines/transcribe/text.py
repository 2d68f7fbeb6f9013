"""Text as it is compared: lower-case words only, and the repetition that marks a decoding loop."""

from __future__ import annotations

import re
from collections import Counter


def letters(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower().replace("ё", "е")).split())


def repeated_ngrams(text: str, n: int = 3, times: int = 3) -> bool:
    """Whether some ``n`` words come back ``times`` times or more: how a decoder stuck in a loop writes."""
    words = letters(text).split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in grams.values())
