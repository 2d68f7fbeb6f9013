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


def looping(text: str, longest: int = 8, times: int = 3) -> bool:
    """Whether some phrase of up to ``longest`` words comes ``times`` times in a row: a decoder's loop.

    Real speech repeats itself too (menus, lists, a witness insisting), but
    rarely the same words three times back to back.
    """
    words = letters(text).split()
    for n in range(1, longest + 1):
        for i in range(len(words) - n * times + 1):
            if all(words[i:i + n] == words[i + k * n:i + (k + 1) * n] for k in range(1, times)):
                return True
    return False
