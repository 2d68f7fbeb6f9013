"""Which language a stretch of speech is in, whether that is sure enough to hand it to a model for that
language, and where the language changes inside a chunk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A part of a chunk is judged on its own only from this much speech: Whisper's detector guesses on less.
MIN_PART_S = 1.0
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
    top = [(token.strip("<|>"), float(p)) for token, p in list(scores)[:3]]
    first = top[0] if top else ("", 0.0)
    second = top[1][1] if len(top) > 1 else 0.0
    sure = first[0] if first[1] >= min_probability and first[1] - second >= min_margin else None
    return Identified(top, sure)


def leaning(part: Identified | None, language: str) -> bool | None:
    """Whether a part is clearly in ``language`` (True), clearly not (False), or cannot say (None)."""
    if part is None:
        return None
    p = part.probability(language)
    return True if p >= _LIKELY else False if p < _UNLIKELY else None


def stretches(parts: Sequence[Identified | None], language: str) -> list[tuple[int, int]]:
    """The parts of a chunk as [first, last) index ranges that are each in ``language`` or each not in it.

    A part that cannot be judged (too short, or not leaning either way) stays
    with the stretch before it (the first ones with the stretch after them):
    a chunk is cut only between two parts that clearly differ.
    """
    cuts, current = [0], None
    for index, part in enumerate(parts):
        lean = leaning(part, language)
        if lean is None:
            continue
        if current is not None and lean != current:
            cuts.append(index)
        current = lean
    return list(zip(cuts, [*cuts[1:], len(parts)]))
