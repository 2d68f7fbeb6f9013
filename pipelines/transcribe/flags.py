"""What makes a transcribed segment doubtful, and the status that follows.

Statuses: ``machine`` (no doubt found), ``machine_flagged`` (text kept, with
the reasons to check it), ``needs_human`` (no machine text is given: no model
for the language, or what the model wrote is known to be invented, or
speech no model transcribed), ``draft_other_model`` (a model for another
language wrote it; unverified), and ``human`` (a person wrote or checked it).
Every status but the last two is machine-made text, unverified until a
person checks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.transcribe.text import letters, repeated_ngrams

if TYPE_CHECKING:  # the transcript's files are written and read without loading the speech models
    from pipelines.transcribe.whisper import Decoded, Settings

MACHINE, FLAGGED, NEEDS_HUMAN, DRAFT = "machine", "machine_flagged", "needs_human", "draft_other_model"
HUMAN = "human"
MACHINE_MADE = (MACHINE, FLAGGED, DRAFT)

# What Whisper writes on silence, music and noise, learned from subtitles it was trained on. Matched on
# lower-case letters only, anywhere in a segment that holds little else.
KNOWN_HALLUCINATIONS = (
    "продолжение следует", "субтитры сделал", "субтитры создавал", "субтитры подготовил", "редактор субтитров",
    "спасибо за просмотр", "подписывайтесь на канал", "ставьте лайки", "тревожная музыка",
    "динамичная музыка", "спокойная музыка", "музыкальная заставка", "веселая музыка", "грустная музыка",
    "аплодисменты", "dimatorzok", "amara org", "субтитры",
)
_LOW_WORD_PROBABILITY = 0.3
_LOW_WORD_SHARE = 0.3


def hallucination(text: str) -> str | None:
    """The known invented phrase that makes up most of ``text``, if any."""
    plain = letters(text)
    for phrase in KNOWN_HALLUCINATIONS:
        if phrase in plain and len(phrase) >= 0.5 * len(plain):
            return phrase
    return None


def judge(piece: Decoded, settings: Settings, language_sure: bool) -> tuple[list[str], str]:
    """(flags, status) of one Whisper segment."""
    flags = []
    if piece.avg_logprob < settings.log_prob_threshold:
        flags.append("low_log_probability")
    if piece.compression_ratio > settings.compression_ratio_threshold:
        flags.append("high_compression_ratio")
    if piece.no_speech_prob > settings.no_speech_threshold:
        flags.append("high_no_speech_probability")
    if piece.temperature > 0:
        flags.append("temperature_fallback")
    low = [w for w in piece.words if w["probability"] < _LOW_WORD_PROBABILITY]
    if piece.words and len(low) / len(piece.words) > _LOW_WORD_SHARE:
        flags.append("low_word_probabilities")
    if repeated_ngrams(piece.text):
        flags.append("repeated_ngrams")
    if not language_sure:
        flags.append("uncertain_language")
    if hallucination(piece.text) or not letters(piece.text):
        flags.append("known_hallucination" if hallucination(piece.text) else "no_words")
        return flags, NEEDS_HUMAN
    return flags, FLAGGED if flags else MACHINE
