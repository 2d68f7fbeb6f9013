"""The transcribe step: Russian to Whisper, other languages to their own model or to a person.

Nothing that is not confidently Russian is ever given to Whisper as Russian
(it would write fluent Russian that was never said), and ``translate`` is
never used. Speech in a language with a configured model (a Chechen CTC
model) gets that model's text as an unverified draft; anything else is a gap
with its exact times, marked for human transcription.
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

from pipelines.pipeline import Param, StepContext, StepResult
from pipelines.transcribe import audio, chunks, ctc, flags, formats, vad, whisper

VERSION = "1"
LANGUAGE_NAMES = {
    "ru": "Russian", "ce": "Chechen", "en": "English", "de": "German", "uk": "Ukrainian", "kk": "Kazakh",
    "tt": "Tatar", "ba": "Bashkir", "az": "Azerbaijani", "ka": "Georgian", "hy": "Armenian", "tr": "Turkish",
    "ar": "Arabic", "fa": "Persian", "fr": "French", "pl": "Polish", "be": "Belarusian",
}

PARAMS: dict[str, Param] = {
    "model": Param("whisper-base"),             # the Whisper model (registry name) for Russian
    "models": Param(""),                        # other languages: "ce=mms-che,..." (registry names, kind ctc-onnx)
    "default_languages": Param("ru"),           # when the intake record names none
    "device": Param("auto"),                    # auto, cpu or cuda
    "compute_type": Param("default"),           # default: int8 on the CPU, float16 on a GPU
    "beam_size": Param(5, minimum=1, maximum=10),
    "batch_size": Param(8, minimum=1, maximum=64),
    "chunk_s": Param(30.0, minimum=5, maximum=30),
    "merge_gap_s": Param(1.0, minimum=0, maximum=10),
    "vad_threshold": Param(0.5, minimum=0.05, maximum=0.95),
    "min_language_probability": Param(0.7, minimum=0.3, maximum=1),
    "min_language_margin": Param(0.3, minimum=0, maximum=1),
    "log_prob_threshold": Param(-1.0, minimum=-10, maximum=0),
    "compression_ratio_threshold": Param(2.4, minimum=1, maximum=10),
    "no_speech_threshold": Param(0.6, minimum=0, maximum=1),
    "hallucination_silence_threshold": Param(2.0, minimum=0, maximum=30),
}


def other_models(text: str) -> dict[str, str]:
    """"ce=mms-che,kk=x" -> {"ce": "mms-che", "kk": "x"}."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    return {lang.strip(): name.strip() for lang, name in pairs}


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


def _label(lang: whisper.Identified, declared: tuple[str, ...]) -> tuple[str, str | None]:
    """(the language to route to, the label a person reads) of a chunk that is not surely Russian.

    Whisper has no Chechen: on Chechen speech it names some other language,
    often with confidence. So where Chechen is declared, a chunk is "probably
    Chechen" unless Whisper surely hears another language that is declared too.
    """
    if lang.sure and (lang.sure in declared or "ce" not in declared):
        return lang.sure, f"probably {LANGUAGE_NAMES.get(lang.sure, lang.sure)}"
    if "ce" in declared:
        return "ce", "probably Chechen"
    guesses = ", ".join(f"{code} {p:.2f}" for code, p in lang.top)
    return "", f"language uncertain ({guesses})"


def _segment(start: float, end: float, text: str, status: str, lang: whisper.Identified, **extra) -> dict:
    return {"start": round(start, 3), "end": round(end, 3), "text": text, "status": status,
            "language": lang.to_json(), **extra}


def transcribe_file(ctx: StepContext) -> dict[str, Any]:
    """The whole transcript of ``ctx.original`` as a JSON-ready mapping (also written by ``run``)."""
    p = ctx.params
    declared = tuple(ctx.languages) or tuple(x.strip() for x in p["default_languages"].split(",") if x.strip())
    models = _installed(ctx)
    base = {"schema": formats.SCHEMA, "languages_declared": list(declared), "settings": dict(p),
            "models": {lang: model.record() for lang, model in models.items()}}
    if not (ctx.facts.get("probe") or {}).get("has_audio", True):
        return {**base, "audio": False, "duration_s": 0.0, "segments": []}
    samples = audio.extract(ctx.original, ctx.workdir / "audio.s16le", ctx.tools)
    regions = vad.speech_regions(samples, threshold=p["vad_threshold"], max_region_s=p["chunk_s"])
    spans = chunks.group(regions, max_s=p["chunk_s"], gap_s=p["merge_gap_s"])
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
    segments: list[dict] = []
    batch = settings.batch_size
    for first in range(0, len(spans), batch):
        group = spans[first:first + batch]
        pieces = [c.audio(samples) for c in group]
        for span, piece, (lang, decoded) in zip(group, pieces, engine.run(pieces), strict=True):
            segments += _chunk_segments(ctx, models, span, piece, lang, decoded, declared, settings)
        if ctx.progress:
            ctx.progress(min(first + batch, len(spans)), len(spans))
    return {**base, "audio": True, "duration_s": round(len(samples) / audio.SAMPLE_RATE, 3), "segments": segments,
            "device": device, "compute_type": compute_type}


def _placed(span: chunks.Chunk, piece: whisper.Decoded) -> whisper.Decoded:
    """``piece`` with its times (seconds into the chunk's audio) as times in the original."""
    words = [{**w, "start": span.to_original(w["start"]), "end": span.to_original(w["end"])} for w in piece.words]
    return dataclasses.replace(piece, start=span.to_original(piece.start), end=span.to_original(piece.end),
                               words=words)


def _chunk_segments(ctx, models, span, piece, lang, decoded, declared, settings) -> list[dict]:
    if decoded is not None:
        out = []
        for d in (_placed(span, piece) for piece in decoded):
            found, status = flags.judge(d, settings, language_sure=True)
            entry = _segment(d.start, d.end, d.text, status, lang, flags=found, model="ru", words=d.words,
                             temperature=d.temperature, avg_logprob=round(d.avg_logprob, 4),
                             no_speech_prob=round(d.no_speech_prob, 4),
                             compression_ratio=round(d.compression_ratio, 3))
            if status == flags.NEEDS_HUMAN:
                entry.update(text="", suppressed_text=d.text)  # what the model invented, for a reviewer only
            out.append(entry)
        return out
    route, label = _label(lang, declared)
    if route in models and route != "ru":
        engine = ctc.load(str(models[route].path), max(ctx.tools.cpu_threads, 1),
                          tuple(sorted(models[route].hashes.items())))
        text, confidence = engine.transcribe(piece)
        if text:
            return [_segment(span.start_s, span.end_s, text, flags.DRAFT, lang, flags=["other_model"],
                             model=route, label=f"{label}, unverified machine draft",
                             confidence=round(confidence, 4), words=[])]
    return [_segment(span.start_s, span.end_s, "", flags.NEEDS_HUMAN, lang, flags=["uncertain_language"],
                     model=None, label=label, words=[])]


def summary(transcript: dict[str, Any]) -> dict[str, Any]:
    """The facts run.json keeps: how much was speech, how much needs a person, which languages."""
    segments = transcript["segments"]
    languages: Counter = Counter()
    for segment in segments:
        top = segment["language"][0]["language"] if segment["language"] else "unknown"
        languages[top] += segment["end"] - segment["start"]
    return {
        "has_audio": transcript["audio"],
        "duration_s": transcript["duration_s"],
        "speech_s": round(sum(s["end"] - s["start"] for s in segments), 1),
        "needs_human_s": round(sum(s["end"] - s["start"] for s in segments if s["status"] == flags.NEEDS_HUMAN), 1),
        "segments": dict(Counter(s["status"] for s in segments)),
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
