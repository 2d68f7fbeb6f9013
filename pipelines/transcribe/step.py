"""The transcribe step: Russian to Whisper, other languages to their own model or to a person.

Nothing that is not confidently Russian is ever given to Whisper as Russian
(it would write fluent Russian that was never said), and ``translate`` is
never used. Speech in a language with a configured model (a Chechen CTC
model) gets that model's text as an unverified draft; anything else is a gap
with its exact times, marked for human transcription.

The language is decided per stretch, not per chunk: a chunk whose parts
clearly differ in language is cut there and each piece heard on its own.
Afterwards every second of speech is accounted for (``accounting``): speech
that no segment covers (a decoder that stopped early, a word stretched over
a sentence in another language) is heard again on its own, and what is
still not covered becomes a gap for a person. A transcript that does not
account for its speech is never written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
from collections import Counter
from pathlib import Path
from typing import Any

from pipelines.pipeline import StepContext, StepResult
from pipelines.transcribe import accounting, audio, chunks, ctc, flags, formats, language, vad, whisper
from pipelines.transcribe.spec import other_models


def _installed(ctx: StepContext) -> dict[str, Any]:
    """The models this run would use, each loaded from the registry (its files verified)."""
    if ctx.models is None:
        raise RuntimeError("the transcribe step needs the model registry")
    found = {"ru": ctx.models.load(ctx.params["model"])}
    found.update({lang: ctx.models.load(name) for lang, name in other_models(ctx.params["models"]).items()})
    return found


@functools.lru_cache(maxsize=1)
def _vad_hash() -> str:
    path = Path(importlib.util.find_spec("faster_whisper").origin).parent / "assets" / "silero_vad_v6.onnx"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(ctx: StepContext) -> dict[str, Any]:
    """What the result depends on besides the parameters: the files of every model, and the VAD model."""
    return {"models": {lang: dict(model.hashes) for lang, model in _installed(ctx).items()},
            "vad": _vad_hash(), "faster_whisper": importlib.metadata.version("faster-whisper")}


def _label(lang: whisper.Identified, declared: tuple[str, ...]) -> tuple[str, str]:
    """(the language to route to, or "" for none; the label a person reads) of speech not surely Russian.

    Whisper has no Chechen: on Chechen speech it names some other language,
    seldom with confidence. So where Chechen is declared, speech is "probably
    Chechen" only when Whisper is sure of no language; a language it is sure
    of is named, and said to be undeclared when it is.
    """
    if lang.sure:
        name = f"probably {language.name(lang.sure)}"
        return (lang.sure, name) if lang.sure in declared else ("", f"{name} (not declared)")
    if "ce" in declared:
        return "ce", "probably Chechen"
    guesses = ", ".join(f"{code} {p:.2f}" for code, p in lang.top)
    return "", f"language uncertain ({guesses})"


def _segment(start: float, end: float, text: str, status: str, lang: whisper.Identified | None, **extra) -> dict:
    return {"start": round(start, 3), "end": round(end, 3), "text": text, "status": status,
            "language": lang.to_json() if lang else [], **extra}


class _Hearing:
    """One recording heard chunk by chunk: Whisper for Russian, another model or a person for the rest."""

    def __init__(self, ctx: StepContext, models: dict[str, Any], engine: whisper.Engine, samples,
                 declared: tuple[str, ...]):
        self.ctx, self.models, self.engine, self.samples, self.declared = ctx, models, engine, samples, declared
        self.done = self.total = 0   # chunks, for progress: cuts and second hearings add to both

    def hear(self, pending: list[chunks.Chunk]) -> list[dict]:
        """Segments of every chunk; a chunk cut where its language changes is heard again piece by piece."""
        segments: list[dict] = []
        batch = self.engine.settings.batch_size
        self.total += len(pending)
        while pending:
            group, pending = pending[:batch], pending[batch:]
            pieces = [c.audio(self.samples) for c in group]
            for span, piece, heard in zip(group, pieces, self.engine.run(pieces, [c.lengths for c in group]),
                                          strict=True):
                if heard.cut:
                    for first, last, lang in heard.cut:
                        sub = span.sub(first, last)
                        if lang is None:
                            pending.append(sub)
                            self.total += 1
                        else:
                            segments += self._segments(sub, sub.audio(self.samples), whisper.Heard(lang, []))
                    self.done += 1
                    continue
                segments += self._segments(span, piece, heard)
                self.done += 1
            if self.ctx.progress:
                self.ctx.progress(self.done, self.total)
        return segments

    def _segments(self, span: chunks.Chunk, piece, heard: whisper.Heard) -> list[dict]:
        lang = heard.language
        if heard.decoded is not None:
            out = []
            model = self.models["ru"].spec.name
            for d in (_placed(span, decoded) for decoded in heard.decoded):
                found, status = flags.judge(d, self.engine.settings, language_sure=True)
                entry = _segment(d.start, d.end, d.text, status, lang, flags=found, model=model, words=d.words,
                                 temperature=d.temperature, avg_logprob=round(d.avg_logprob, 4),
                                 no_speech_prob=round(d.no_speech_prob, 4),
                                 compression_ratio=round(d.compression_ratio, 3))
                if status == flags.NEEDS_HUMAN:
                    entry.update(text="", suppressed_text=d.text, model=None)  # what it invented: for a reviewer
                out.append(entry)
            return out
        route, label = _label(lang, self.declared)
        if route in self.models and route != "ru":
            model = self.models[route]
            engine = ctc.load(str(model.path), max(self.ctx.tools.cpu_threads, 1), tuple(sorted(model.hashes.items())))
            text, confidence = engine.transcribe(piece)
            if text:
                return [_segment(span.start_s, span.end_s, text, flags.DRAFT, lang, flags=["other_model"],
                                 model=model.spec.name, label=f"{label}, unverified machine draft",
                                 confidence=round(confidence, 4), words=[])]
        reason = "uncertain_language" if label.startswith(("language uncertain", "probably Chechen")) \
            else "undeclared_language" if label.endswith("(not declared)") else "no_model_for_language"
        return [_segment(span.start_s, span.end_s, "", flags.NEEDS_HUMAN, lang, flags=[reason], model=None,
                         label=label, words=[])]


def _untranscribed(start: float, end: float) -> dict:
    return _segment(start, end, "", flags.NEEDS_HUMAN, None, flags=["untranscribed_speech"], model=None,
                    label="speech no model transcribed", words=[])


def transcribe_file(ctx: StepContext) -> dict[str, Any]:
    """The whole transcript of ``ctx.original`` as a JSON-ready mapping (also written by ``run``)."""
    p = ctx.params
    declared = tuple(ctx.languages) or tuple(x.strip() for x in p["default_languages"].split(",") if x.strip())
    models = _installed(ctx)
    base = {"schema": formats.SCHEMA, "languages_declared": list(declared), "settings": dict(p),
            "models": {lang: model.record() for lang, model in models.items()}}
    if not (ctx.facts.get("probe") or {}).get("has_audio", True):
        return {**base, "audio": False, "duration_s": 0.0, "segments": [], "speech": []}
    samples = audio.extract(ctx.original, ctx.workdir / "audio.s16le", ctx.tools,
                            (ctx.facts.get("probe") or {}).get("duration_s"))
    found = vad.speech(samples, threshold=p["vad_threshold"], max_region_s=p["chunk_s"])
    spans = chunks.group(found.regions, max_s=p["chunk_s"], gap_s=p["merge_gap_s"])
    device, compute_type = whisper.resolve_device(p["device"])
    if p["compute_type"] != "default":
        compute_type = p["compute_type"]
    settings = whisper.Settings(
        beam_size=p["beam_size"], batch_size=p["batch_size"], min_language_probability=p["min_language_probability"],
        min_language_margin=p["min_language_margin"], compression_ratio_threshold=p["compression_ratio_threshold"],
        log_prob_threshold=p["log_prob_threshold"], no_speech_threshold=p["no_speech_threshold"],
        hallucination_silence_threshold=p["hallucination_silence_threshold"])
    engine = whisper.Engine(whisper.load(str(models["ru"].path), device, compute_type, ctx.tools.cpu_threads,
                                         tuple(sorted(models["ru"].hashes.items()))), settings)
    hearing = _Hearing(ctx, models, engine, samples, declared)
    segments = hearing.hear(spans)
    speech = [(start / audio.SAMPLE_RATE, end / audio.SAMPLE_RATE) for start, end in found.core]
    # Speech the decoders skipped is heard once more on its own: alone, its language is judged without the
    # speech around it, and Whisper cannot stop before it. What is still skipped goes to a person.
    skipped = [piece for start, end in accounting.uncovered(speech, segments)
               for piece in chunks.within(found.regions, start, end, max_s=p["chunk_s"], gap_s=p["merge_gap_s"])]
    segments += hearing.hear(skipped)
    segments += [_untranscribed(start, end) for start, end in accounting.uncovered(speech, segments)]
    segments.sort(key=lambda s: (s["start"], s["end"]))
    return {**base, "audio": True, "duration_s": round(len(samples) / audio.SAMPLE_RATE, 3), "segments": segments,
            "speech": [[round(a, 3), round(b, 3)] for a, b in speech], "device": device,
            "compute_type": compute_type}


def _placed(span: chunks.Chunk, piece: whisper.Decoded) -> whisper.Decoded:
    """``piece`` with its times (seconds into the chunk's audio) as times in the original."""
    words = [{**w, "start": span.to_original(w["start"]), "end": span.to_original(w["end"])} for w in piece.words]
    return dataclasses.replace(piece, start=span.to_original(piece.start), end=span.to_original(piece.end),
                               words=words)


def summary(transcript: dict[str, Any]) -> dict[str, Any]:
    """The facts run.json keeps: how much was speech, how it is accounted for, which languages.

    Raises AccountingError when some speech is in no segment, or in two.
    """
    segments = transcript["segments"]
    languages: Counter = Counter()
    for segment in segments:
        top = segment["language"][0]["language"] if segment["language"] else "unknown"
        languages[top] += segment["end"] - segment["start"]
    account = accounting.close([tuple(span) for span in transcript.get("speech", [])], segments)
    by_status = account.pop("speech_by_status_s")
    return {
        "has_audio": transcript["audio"],
        "duration_s": transcript["duration_s"],
        **account,
        "needs_human_s": by_status.get(flags.NEEDS_HUMAN, 0.0),
        "machine_s": round(sum(v for k, v in by_status.items() if k in flags.MACHINE_MADE), 1),
        "segments": dict(Counter(s["status"] for s in segments)),
        "made_by": formats.made_by(segments),
        "languages_found": {lang: round(seconds, 1) for lang, seconds in languages.most_common()},
    }


def run(ctx: StepContext) -> StepResult:
    transcript = transcribe_file(ctx)
    transcript["summary"] = summary(transcript)
    (ctx.workdir / "audio.s16le").unlink(missing_ok=True)
    paths = formats.write(ctx.workdir, transcript)
    warnings = [] if transcript["audio"] else ["the recording has no audio stream: nothing to transcribe"]
    return StepResult(
        files=paths, facts=transcript["summary"], warnings=warnings,
        tools={"faster-whisper": importlib.metadata.version("faster-whisper"),
               "ctranslate2": importlib.metadata.version("ctranslate2"),
               "onnxruntime": importlib.metadata.version("onnxruntime")},
        models={lang: record for lang, record in transcript["models"].items()},
    )
