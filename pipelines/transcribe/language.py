"""Which language a stretch of speech is in, whether that is sure enough to hand it to a model for that
language, and where the language changes inside a chunk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A part of a chunk is judged on its own only from this much speech: Whisper's detector guesses on less.
MIN_PART_S = 1.0
MIN_OTHER_S = 2.0   # ... and judged "not this language" on a low probability alone only from this much
# On a part, Whisper's detector is less sure than on a whole chunk; these say "this part is Russian" and
# "this part is not Russian" only when it leans clearly one way, so that a chunk is cut only where it changes.
_LIKELY = 0.5
_UNLIKELY = 0.1

# What a person reads for each code Whisper's language detector gives (and Chechen, which it lacks).
NAMES = {
    "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani", "ba": "Bashkir",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "bo": "Tibetan", "br": "Breton", "bs": "Bosnian",
    "ca": "Catalan", "ce": "Chechen", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish",
    "fo": "Faroese", "fr": "French", "gl": "Galician", "gu": "Gujarati", "ha": "Hausa", "haw": "Hawaiian",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jw": "Javanese", "ka": "Georgian",
    "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean", "la": "Latin", "lb": "Luxembourgish",
    "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mi": "Maori",
    "mk": "Macedonian", "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese",
    "my": "Burmese", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "oc": "Occitan",
    "pa": "Punjabi", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sa": "Sanskrit", "sd": "Sindhi", "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "sn": "Shona",
    "so": "Somali", "sq": "Albanian", "sr": "Serbian", "su": "Sundanese", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai", "tk": "Turkmen", "tl": "Tagalog", "tr": "Turkish",
    "tt": "Tatar", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek", "vi": "Vietnamese", "yi": "Yiddish",
    "yo": "Yoruba", "yue": "Cantonese", "zh": "Chinese",
}


@dataclass(frozen=True)
class Identified:
    top: list[tuple[str, float]]   # the three likeliest languages (ISO 639-1, probability)
    sure: str | None               # the language, when its probability and margin pass the thresholds

    def to_json(self) -> list[dict]:
        return [{"language": code, "probability": round(p, 4)} for code, p in self.top]

    def probability(self, language: str) -> float:
        return next((p for code, p in self.top if code == language), 0.0)


def name(code: str) -> str:
    return NAMES.get(code, code)


def identify(scores: Sequence[tuple[str, float]], *, min_probability: float, min_margin: float) -> Identified:
    """``scores``: Whisper's (``<|xx|>`` token, probability) pairs, likeliest first."""
    return _judged([(token.strip("<|>"), float(p)) for token, p in list(scores)[:3]], min_probability, min_margin)


def _judged(top: list[tuple[str, float]], min_probability: float, min_margin: float) -> Identified:
    first = top[0] if top else ("", 0.0)
    second = top[1][1] if len(top) > 1 else 0.0
    sure = first[0] if first[1] >= min_probability and first[1] - second >= min_margin else None
    return Identified(top, sure)


def combined(parts: Sequence[Identified], weights: Sequence[float], *, min_probability: float,
             min_margin: float) -> Identified:
    """The language of a whole from its parts': their probabilities averaged, weighted by their length."""
    total: dict[str, float] = {}
    for part, weight in zip(parts, weights, strict=True):
        for code, p in part.top:
            total[code] = total.get(code, 0.0) + weight * p
    scale = sum(weights) or 1.0
    top = sorted(((code, p / scale) for code, p in total.items()), key=lambda item: -item[1])[:3]
    return _judged(top, min_probability, min_margin)


def leaning(part: Identified | None, language: str, seconds: float) -> bool | None:
    """Whether a part is clearly in ``language`` (True), clearly not (False), or cannot say (None).

    Clearly not: the detector is sure of another language, or, on a part of
    at least MIN_OTHER_S, gives ``language`` almost no chance. On shorter
    parts it can be far off (a Russian phrase of a second and a half heard as
    Thai), and a cut costs another encoder pass.
    """
    if part is None:
        return None
    p = part.probability(language)
    if p >= _LIKELY:
        return True
    if (part.sure and part.sure != language) or (p < _UNLIKELY and seconds >= MIN_OTHER_S):
        return False
    return None


def stretches(parts: Sequence[Identified | None], seconds: Sequence[float],
              language: str) -> list[tuple[int, int, bool | None]]:
    """The parts of a chunk as [first, last) index ranges that are each in ``language`` or each not in it,
    with that lean (None where no part of the range could be judged).

    A part that cannot be judged (too short, or not leaning either way) stays
    with the stretch before it (the first ones with the stretch after them):
    a chunk is cut only between two parts that clearly differ.
    """
    cuts, leans, current = [0], [None], None
    for index, (part, length) in enumerate(zip(parts, seconds, strict=True)):
        lean = leaning(part, language, length)
        if lean is None:
            continue
        if current is not None and lean != current:
            cuts.append(index)
            leans.append(lean)
        leans[-1] = lean
        current = lean
    return [(first, last, lean) for first, last, lean in zip(cuts, [*cuts[1:], len(parts)], leans, strict=False)]
