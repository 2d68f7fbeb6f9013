"""Whisper (faster-whisper, CTranslate2) over chunks, in batches: one encoder pass serves both the
language identification of every chunk and the decoding of those that are Russian.

The encoder's output of a chunk also serves the language of each of its
parts: the detector reads only the part's frames of it. A chunk whose parts
clearly differ in language is not decoded; the caller cuts it there and
hands the pieces back, each to be heard on its own.

A chunk is decoded as one piece of text (no timestamp tokens, as the
library's batched pipeline does) and cut into sentences by the times of its
words, and at every pause of over half a second between words. A word whose time stretches past
what a word can last is cut back to that, so that it cannot cover speech it
did not hear (Whisper gives the time it skipped over to a word beside it).
Batched decoding runs at temperature 0 only and has no silence guard:
a chunk whose decoding looks wrong (a sentence caught in a loop, the chunk
too unlikely) is decoded again on its own with the usual temperature fallback
and the guard, and its segments record the temperature that was used. Times
are seconds into the chunk's audio; the caller maps them to the original.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

from pipelines.transcribe.audio import SAMPLE_RATE
from pipelines.transcribe.language import MIN_PART_S, Identified, combined, identify, stretches
from pipelines.transcribe.text import looping

FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
_SENTENCE_END = (".", "?", "!", "…")
_PAUSE_S = 0.5            # a pause between two words this long ends a segment
_FRAMES_PER_S = 50        # Whisper's encoder: 1500 frames for 30 s
_MOSTLY = 0.7             # share of a chunk's speech its judged parts must hold to speak for it
_PREPEND = "\"'“¿([{-"
_APPEND = "\"'.。,，!！?？:：”)]}、"


@dataclass
class Decoded:
    """One piece of text Whisper produced, with everything needed to judge it."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    words: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Heard:
    """What Whisper made of one chunk."""

    language: Identified                        # the chunk's language
    parts: list[Identified | None]              # each part's, where it is long enough to tell
    # Where the language changes (the chunk is not decoded): (first, last) part of each stretch, and the
    # stretch's language where it is clearly not this engine's (heard from the same encoder pass: it needs
    # no other), or None where it is to be heard again on its own.
    cut: list[tuple[int, int, Identified | None]] | None = None
    decoded: list[Decoded] | None = None        # the text, when the chunk is surely this engine's language


@dataclass
class Settings:
    language: str = "ru"
    beam_size: int = 5
    batch_size: int = 8
    min_language_probability: float = 0.7
    min_language_margin: float = 0.3
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    hallucination_silence_threshold: float = 2.0


def resolve_device(device: str) -> tuple[str, str]:
    """("cuda" or "cpu", compute type): ``auto`` takes a GPU when CTranslate2 sees one."""
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device, "float16" if device == "cuda" else "int8"


@functools.lru_cache(maxsize=2)
def load(path: str, device: str, compute_type: str, cpu_threads: int, files: tuple = ()) -> WhisperModel:
    """A loaded model, kept for the next job of this process (loading takes seconds).

    ``files`` (the verified hashes) is part of the key: a model replaced on
    disk is loaded anew, so what run.json records is what ran.
    """
    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                        local_files_only=True)


class Engine:
    def __init__(self, model: WhisperModel, settings: Settings):
        self.model = model
        self.settings = settings
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language=settings.language)
        self.prompt = model.get_prompt(self.tokenizer, [], without_timestamps=True)
        self.suppress = get_suppressed_tokens(self.tokenizer, [-1])

    def _features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([pad_or_trim(self.model.feature_extractor(chunk)[..., :-1]) for chunk in audio])

    def run(self, audio: Sequence[np.ndarray], parts: Sequence[Sequence[int]]) -> Iterator[Heard]:
        """For each chunk (its samples, and the length in samples of each of its parts): what was heard."""
        size = self.settings.batch_size
        for first in range(0, len(audio), size):
            batch = audio[first:first + size]
            features = self._features(batch)
            encoded = self.model.encode(features)
            frames = self._host(encoded)
            heard = [self._hear(frames[row], lengths) for row, lengths in enumerate(parts[first:first + size])]
            mine = [i for i, chunk in enumerate(heard) if chunk.language.sure == self.settings.language
                    and chunk.cut is None]
            if mine:
                subset = encoded if len(mine) == len(batch) else self._subset(encoded, features, mine)
                for i, decoded in zip(mine, self._decode(subset, [batch[i] for i in mine]), strict=True):
                    heard[i].decoded = decoded
            yield from heard

    def _identify(self, scores) -> Identified:
        return identify(scores, min_probability=self.settings.min_language_probability,
                        min_margin=self.settings.min_language_margin)

    def _detect(self, frames: np.ndarray) -> Identified:
        """The language of what ``frames`` of an encoder output hold.

        The detector reads every frame it is given; given only some of a
        chunk's frames, it hears those (in the context the encoder saw), at
        the cost of one decoder step instead of another encoder pass.
        """
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(frames[None]))
        if self.model.model.device != "cpu":
            view = view.to_device(ctranslate2.Device.cuda)
        return self._identify(self.model.model.detect_language(view)[0])

    def _hear(self, frames: np.ndarray, lengths: Sequence[int]) -> Heard:
        """The language of a chunk and of each of its parts long enough to tell, from its encoder output.

        Where every part is surely this engine's language and they hold most
        of the chunk, the chunk is too; otherwise the detector reads the
        chunk's speech (not the padding after it) as a whole.
        """
        spans, at = [], 0
        for length in lengths:
            spans.append((at * _FRAMES_PER_S // SAMPLE_RATE, min((at + length) * _FRAMES_PER_S // SAMPLE_RATE,
                                                                 len(frames))))
            at += length
        judged = len(lengths) > 1
        parts = [self._detect(frames[a:b]) if judged and length >= MIN_PART_S * SAMPLE_RATE and b > a else None
                 for (a, b), length in zip(spans, lengths, strict=True)]
        cut = stretches(parts, [length / SAMPLE_RATE for length in lengths], self.settings.language)
        known = [(part, length) for part, length in zip(parts, lengths, strict=True) if part is not None]
        mixed = combined([part for part, _ in known], [length for _, length in known],
                         min_probability=self.settings.min_language_probability,
                         min_margin=self.settings.min_language_margin)
        if len(cut) > 1:   # each stretch is heard on its own; the chunk's own language decides nothing
            return Heard(mixed, parts,
                         [(a, b, self._detect(frames[spans[a][0]:spans[b - 1][1]]) if lean is False else None)
                          for a, b, lean in cut])
        if (known and all(part.sure == self.settings.language for part, _ in known)
                and sum(length for _, length in known) >= _MOSTLY * at):
            lang = mixed
        else:
            lang = self._detect(frames[:max(spans[-1][1], 1)])
        return Heard(lang, parts)

    def _host(self, encoded: ctranslate2.StorageView) -> np.ndarray:
        if self.model.model.device != "cpu":
            encoded = encoded.to_device(ctranslate2.Device.cpu)
        return np.asarray(encoded)

    def _subset(self, encoded: ctranslate2.StorageView, features: np.ndarray, rows: list[int]):
        if self.model.model.device == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
        return self.model.encode(features[rows])  # on a GPU, encoding again is cheaper than copying back

    def _decode(self, encoded, audio: Sequence[np.ndarray]) -> list[list[Decoded]]:
        s = self.settings
        results = self.model.model.generate(
            encoded, [list(self.prompt) for _ in audio], beam_size=s.beam_size, max_length=self.model.max_length,
            suppress_blank=True, suppress_tokens=self.suppress, return_scores=True, return_no_speech_prob=True,
            sampling_temperature=0.0,
        )
        pieces, sizes = [], []
        for result, chunk in zip(results, audio, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            duration = len(chunk) / SAMPLE_RATE
            size = int(math.ceil(duration) * self.model.frames_per_second)
            sizes.append(size)
            subsegments, _, _ = self.model._split_segments_by_timestamps(
                tokenizer=self.tokenizer, tokens=tokens, time_offset=0.0, segment_size=size,
                segment_duration=duration, seek=0)
            pieces.append([dict(sub, no_speech_prob=result.no_speech_prob, avg_logprob=avg_logprob)
                           for sub in subsegments])
        self.model.add_word_timestamps(pieces, self.tokenizer, encoded, sizes, _PREPEND, _APPEND, 0.0)
        decoded = []
        for chunk, subs in zip(audio, pieces, strict=True):
            first = [piece for sub in subs for piece in self._sentences(sub, 0.0)]
            # Decoded again only when caught in a loop: a sentence that compresses too well because the same
            # words come three times in a row. Menus and lists compress well too, and an unlikely chunk is
            # as unlikely at a higher temperature: those are flagged for a person, not decoded again.
            suspicious = any(p.compression_ratio > s.compression_ratio_threshold and looping(p.text) for p in first)
            silent = subs and subs[0]["no_speech_prob"] > s.no_speech_threshold
            if silent and subs[0]["avg_logprob"] < s.log_prob_threshold:
                decoded.append([])  # Whisper's own rule: no speech, whatever it wrote
            else:
                decoded.append(self._again(chunk) if suspicious else first)
        return decoded

    def _sentences(self, sub: dict[str, Any], temperature: float) -> list[Decoded]:
        """A decoded piece cut into sentences by its words' times."""
        pieces = sentences(sub.get("words") or [])
        if not pieces:  # no words: keep the piece as the decoder gave it
            text = self.tokenizer.decode(sub["tokens"]).strip()
            pieces = [(round(sub["start"], 3), round(sub["end"], 3), text, [])] if text else []
        return [Decoded(start=start, end=end, text=text, avg_logprob=sub["avg_logprob"],
                        no_speech_prob=sub["no_speech_prob"], compression_ratio=get_compression_ratio(text),
                        temperature=temperature, words=group)
                for start, end, text, group in pieces]

    def _again(self, chunk: np.ndarray) -> list[Decoded]:
        """One suspicious chunk decoded alone, with temperature fallback and the silence guard."""
        s = self.settings
        segments, _ = self.model.transcribe(
            chunk, language=s.language, task="transcribe", beam_size=s.beam_size,
            temperature=list(FALLBACK_TEMPERATURES), compression_ratio_threshold=s.compression_ratio_threshold,
            log_prob_threshold=s.log_prob_threshold, no_speech_threshold=s.no_speech_threshold,
            condition_on_previous_text=False, word_timestamps=True, vad_filter=False,
            hallucination_silence_threshold=s.hallucination_silence_threshold,
        )
        out = []
        for seg in segments:
            words = [{"start": w.start, "end": w.end, "word": w.word, "probability": w.probability}
                     for w in seg.words or []]
            pieces = sentences(words) or [(round(seg.start, 3), round(seg.end, 3), seg.text.strip(), [])]
            out += [Decoded(start=start, end=end, text=text, avg_logprob=seg.avg_logprob,
                            no_speech_prob=seg.no_speech_prob, compression_ratio=get_compression_ratio(text),
                            temperature=seg.temperature, words=group)
                    for start, end, text, group in pieces]
        return out


def plausible_s(word: str) -> float:
    """The longest a spoken word can honestly last: generous, since people draw words out and hesitate."""
    letters = sum(ch.isalpha() for ch in word)
    digits = sum(ch.isdigit() for ch in word)   # "1995" is four words when spoken
    return max(1.2, 0.15 * letters + 0.5 * digits)


def sentences(words: list[dict[str, Any]]) -> list[tuple[float, float, str, list[dict[str, Any]]]]:
    """Words as (start, end, text, words) sentences: cut at . ? ! …, and at every pause over _PAUSE_S.

    A word lasting longer than ``plausible_s`` is cut back to that: the
    first word of a sentence keeps its end (Whisper stretches it back over
    what it skipped before it), any other keeps its start. What it loses is
    left uncovered, for the caller to account for.
    """
    groups: list[list[dict]] = [[]]
    for raw in words:
        word = {"start": round(raw["start"], 3), "end": round(raw["end"], 3), "word": raw["word"],
                "probability": round(raw["probability"], 4)}
        longest = plausible_s(word["word"])
        if word["end"] - word["start"] > longest:
            if groups[-1] and word["start"] - groups[-1][-1]["end"] <= _PAUSE_S:
                word["end"] = round(word["start"] + longest, 3)
            else:
                word["start"] = round(word["end"] - longest, 3)
            word["stretched"] = True
        if groups[-1] and word["start"] - groups[-1][-1]["end"] > _PAUSE_S:
            groups.append([])
        groups[-1].append(word)
        if word["word"].rstrip().endswith(_SENTENCE_END):
            groups.append([])
    return [(g[0]["start"], g[-1]["end"], "".join(w["word"] for w in g).strip(), g) for g in groups if g]
