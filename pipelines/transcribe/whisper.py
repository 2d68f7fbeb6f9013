"""Whisper (faster-whisper, CTranslate2) over chunks, in batches: one encoder pass serves both the
language identification of every chunk and the decoding of those that are Russian.

The library's batched pipeline decodes at temperature 0 only and cannot stop
at silences; a chunk whose first decoding looks wrong (too repetitive, too
unlikely) is decoded again on its own with the usual temperature fallback and
the silence guard, and its segments record the temperature that was used.
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
from pipelines.transcribe.language import Identified, identify

FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
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
def load(path: str, device: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    """A loaded model, kept for the next job of this process (loading takes seconds)."""
    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                        local_files_only=True)


class Engine:
    def __init__(self, model: WhisperModel, settings: Settings):
        self.model = model
        self.settings = settings
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                                   language=settings.language)
        self.prompt = model.get_prompt(self.tokenizer, [], without_timestamps=False)
        self.suppress = get_suppressed_tokens(self.tokenizer, [-1])

    def _features(self, audio: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([pad_or_trim(self.model.feature_extractor(chunk)[..., :-1]) for chunk in audio])

    def run(self, audio: Sequence[np.ndarray], offsets: Sequence[float]
            ) -> Iterator[tuple[Identified, list[Decoded] | None]]:
        """For each chunk: its languages, and its text if it is surely the language of this engine."""
        size = self.settings.batch_size
        for first in range(0, len(audio), size):
            batch, starts = audio[first:first + size], offsets[first:first + size]
            features = self._features(batch)
            encoded = self.model.encode(features)
            found = [identify(scores, min_probability=self.settings.min_language_probability,
                              min_margin=self.settings.min_language_margin)
                     for scores in self.model.model.detect_language(encoded)]
            mine = [i for i, lang in enumerate(found) if lang.sure == self.settings.language]
            texts: dict[int, list[Decoded]] = {}
            if mine:
                subset = encoded if len(mine) == len(batch) else self._subset(encoded, features, mine)
                decoded = self._decode(subset, [batch[i] for i in mine], [starts[i] for i in mine])
                texts = dict(zip(mine, decoded, strict=True))
            for i, lang in enumerate(found):
                yield lang, texts.get(i)

    def _subset(self, encoded: ctranslate2.StorageView, features: np.ndarray, rows: list[int]):
        if self.model.model.device == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[rows]))
        return self.model.encode(features[rows])  # on a GPU, encoding again is cheaper than copying back

    def _decode(self, encoded, audio: Sequence[np.ndarray], starts: Sequence[float]) -> list[list[Decoded]]:
        s = self.settings
        results = self.model.model.generate(
            encoded, [list(self.prompt) for _ in audio], beam_size=s.beam_size, max_length=self.model.max_length,
            suppress_blank=True, suppress_tokens=self.suppress, return_scores=True, return_no_speech_prob=True,
            sampling_temperature=0.0,
        )
        pieces, sizes = [], []
        for result, chunk, start in zip(results, audio, starts, strict=True):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            duration = len(chunk) / SAMPLE_RATE
            size = int(math.ceil(duration) * self.model.frames_per_second)
            sizes.append(size)
            subsegments, _, _ = self.model._split_segments_by_timestamps(
                tokenizer=self.tokenizer, tokens=tokens, time_offset=start, segment_size=size,
                segment_duration=duration, seek=0)
            pieces.append([dict(sub, no_speech_prob=result.no_speech_prob, avg_logprob=avg_logprob)
                           for sub in subsegments])
        self.model.add_word_timestamps(pieces, self.tokenizer, encoded, sizes, _PREPEND, _APPEND, 0.0)
        decoded = []
        for chunk, start, subs in zip(audio, starts, pieces, strict=True):
            text = "".join(self.tokenizer.decode(sub["tokens"]) for sub in subs)
            first = [self._piece(sub, 0.0) for sub in subs]
            suspicious = subs and (get_compression_ratio(text) > s.compression_ratio_threshold
                                   or subs[0]["avg_logprob"] < s.log_prob_threshold)
            silent = subs and subs[0]["no_speech_prob"] > s.no_speech_threshold
            if silent and subs[0]["avg_logprob"] < s.log_prob_threshold:
                decoded.append([])  # Whisper's own rule: no speech, whatever it wrote
            else:
                decoded.append(self._again(chunk, start) if suspicious else first)
        return decoded

    def _piece(self, sub: dict[str, Any], temperature: float) -> Decoded:
        text = self.tokenizer.decode(sub["tokens"])
        return Decoded(
            start=round(sub["start"], 3), end=round(sub["end"], 3), text=text.strip(),
            avg_logprob=sub["avg_logprob"], no_speech_prob=sub["no_speech_prob"],
            compression_ratio=get_compression_ratio(text), temperature=temperature,
            words=[{"start": round(w["start"], 3), "end": round(w["end"], 3), "word": w["word"],
                    "probability": round(w["probability"], 4)} for w in sub.get("words") or []],
        )

    def _again(self, chunk: np.ndarray, start: float) -> list[Decoded]:
        """One suspicious chunk decoded alone, with temperature fallback and the silence guard."""
        s = self.settings
        segments, _ = self.model.transcribe(
            chunk, language=s.language, task="transcribe", beam_size=s.beam_size,
            temperature=[0.0, *FALLBACK_TEMPERATURES], compression_ratio_threshold=s.compression_ratio_threshold,
            log_prob_threshold=s.log_prob_threshold, no_speech_threshold=s.no_speech_threshold,
            condition_on_previous_text=False, word_timestamps=True, vad_filter=False,
            hallucination_silence_threshold=s.hallucination_silence_threshold,
        )
        return [Decoded(start=round(start + seg.start, 3), end=round(start + seg.end, 3), text=seg.text.strip(),
                        avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
                        compression_ratio=seg.compression_ratio, temperature=seg.temperature,
                        words=[{"start": round(start + w.start, 3), "end": round(start + w.end, 3), "word": w.word,
                                "probability": round(w.probability, 4)} for w in seg.words or []])
                for seg in segments]
