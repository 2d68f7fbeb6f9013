"""Transcription benchmark: our transcribe step side by side with bare faster-whisper, same model, same run.

Recordings, made from ../shared/data/speech-ru (one speaker, studio quality):
  shared   every clip of the set once, 1 s of silence between (about 9.5 minutes)
  10min    clips repeated to ten minutes
  field    the 10-minute file as a phone in the field gives it: telephone band (300-3400 Hz),
           pink noise at 10 dB SNR, AAC at 32 kb/s
  mixed    about 4 minutes of Russian clips and sentences in German, Italian, Georgian and English
           (espeak-ng), in a fixed random order, with pauses of 0.2-2.5 s: code-switching. Its reference
           is the Russian alone; "foreign_as_text_s" is how much of the other languages a contender
           covered with text (for ours: machine text, which must be none)

Contenders, each in a process of its own (so its peak memory is its own):
  sequential   WhisperModel.transcribe(language="ru", vad_filter=True)
  batched      BatchedInferencePipeline.transcribe(language="ru", batch_size=8)
  batched+words  the same with word timestamps (what our step produces)
  ours         the transcribe step (audio extraction, VAD, language identification per chunk, batched
               decoding with word timestamps, flags)

    .venv/bin/python benchmarks/transcribe.py [--recordings shared,10min,field] [--contenders ...]

Writes benchmarks/results/transcribe-<UTC time>.json and prints wall time, real-time factor, WER and
peak memory, with ratios against bare batched decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
SHARED = REPO.parent / "shared" / "data" / "speech-ru"
RESULTS = REPO / "benchmarks" / "results"
CONTENDERS = ("sequential", "batched", "batched+words", "ours")


FOREIGN = {
    "de": "Guten Tag. Ich heiße Anna und ich wohne seit vielen Jahren in Berlin. Heute ist das Wetter schön.",
    "it": "Buongiorno. Mi chiamo Marco e abito a Roma da molti anni. Oggi il tempo è bello e andiamo al parco.",
    "ka": "გამარჯობა. მე მქვია ნინო და ვცხოვრობ თბილისში. დღეს კარგი ამინდია და ჩვენ პარკში მივდივართ.",
    "en": "Good morning. My name is Peter and I have lived in London for many years. The weather is fine today.",
}


def _mixed(clips: list, folder: Path) -> tuple[Path, str]:
    """Code-switched speech; the spans of the other languages go beside it in mixed.foreign.json."""
    import random

    from speech_fixtures import compose, spoken

    rng = random.Random(16)
    voices = {lang: spoken(text, lang, folder) for lang, text in FOREIGN.items()}
    parts: list = [0.5]
    while sum(len(p[2]) / 16000 if isinstance(p, tuple) else p for p in parts) < 240:
        if rng.random() < 0.6:
            text, samples = rng.choice(clips)
            parts.append(("ru", text, samples))
        else:
            lang = rng.choice(sorted(voices))
            parts.append((lang, "", voices[lang][:int(rng.uniform(3, 7) * 16000)]))
        parts.append(round(rng.choice([rng.uniform(0.2, 0.6), rng.uniform(0.6, 2.5)]), 2))
    placed = compose(parts, folder / "mixed.wav")
    (folder / "mixed.foreign.json").write_text(json.dumps([(p.start, p.end) for p in placed if p.language != "ru"]))
    return folder / "mixed.wav", " ".join(p.text for p in placed if p.language == "ru")


def _foreign_as_text(path: Path, spans: list[tuple[float, float]]) -> float | None:
    """Seconds of the other languages that text segments cover, where the recording has them."""
    sidecar = path.with_suffix(".foreign.json")
    if not sidecar.exists():
        return None
    foreign = json.loads(sidecar.read_text())
    return round(sum(max(0.0, min(b, d) - max(a, c)) for a, b in foreign for c, d in spans), 1)


def make_recordings(folder: Path, wanted: list[str]) -> dict[str, tuple[Path, str]]:
    import numpy as np
    from faster_whisper import decode_audio
    from speech_fixtures import RATE, join, russian_set

    clips = russian_set(SHARED)
    made: dict[str, tuple[Path, str]] = {}
    placed = join(clips, 1.0, folder / "shared.wav")
    made["shared"] = (folder / "shared.wav", " ".join(p.text for p in placed))
    ten, total = [], 0.0
    while total < 600:
        for clip in clips:
            if total >= 600:
                break
            ten.append(clip)
            total += len(clip[1]) / RATE + 1.0
    placed = join(ten, 1.0, folder / "10min.wav")
    made["10min"] = (folder / "10min.wav", " ".join(p.text for p in placed))
    if "field" in wanted:
        clean = decode_audio(str(folder / "10min.wav"), sampling_rate=RATE)
        noise_wav = folder / "pink.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"anoisesrc=color=pink:sample_rate={RATE}:duration={len(clean) / RATE + 1}", str(noise_wav)],
                       check=True)
        noise = decode_audio(str(noise_wav), sampling_rate=RATE)[: len(clean)]
        speech_power = np.mean(clean[np.abs(clean) > 1e-4] ** 2)
        noise *= np.sqrt(speech_power / (np.mean(noise ** 2) * 10 ** (10 / 10)))  # 10 dB SNR
        mixed = folder / "field-mix.wav"
        join([("", clean + noise)], 0.0, mixed)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mixed), "-af", "highpass=f=300,lowpass=f=3400",
                        "-c:a", "aac", "-b:a", "32k", str(folder / "field.m4a")], check=True)
        made["field"] = (folder / "field.m4a", made["10min"][1])
    if "mixed" in wanted:
        made["mixed"] = _mixed(clips, folder)
    return {name: made[name] for name in wanted}


def run_one(contender: str, path: Path, reference: str, model_dir: str) -> dict:
    """Inside a fresh process: one contender on one recording."""
    import jiwer
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
    from speech_fixtures import normalise

    began = time.perf_counter()
    if contender == "ours":
        from models.registry import Registry
        from pipelines.intake import INTAKE
        from pipelines.pipeline import StepContext
        from pipelines.transcribe import step as transcribe
        params = {k.split(".", 1)[1]: p.default for k, p in INTAKE.params.items() if k.startswith("transcribe.")}
        with tempfile.TemporaryDirectory() as work:
            context = StepContext(evidence_id="", original=path, workdir=Path(work), params=params,
                                  facts={"probe": {"has_audio": True}}, models=Registry(), languages=("ru",))
            transcript = transcribe.transcribe_file(context)
        text = " ".join(s["text"] for s in transcript["segments"])
        duration = transcript["duration_s"]
        facts = transcribe.summary(transcript)
        extra = {key: facts[key] for key in ("segments", "speech_s", "covered_s", "unaccounted_s", "needs_human_s")}
        spans = [(s["start"], s["end"]) for s in transcript["segments"]
                 if s["status"] in ("machine", "machine_flagged")]
    else:
        model = WhisperModel(model_dir, device="cpu", compute_type="int8")
        audio = decode_audio(str(path), sampling_rate=16000)
        duration = len(audio) / 16000
        if contender == "sequential":
            segments, _ = model.transcribe(audio, language="ru", vad_filter=True)
        else:
            segments, _ = BatchedInferencePipeline(model).transcribe(
                audio, language="ru", batch_size=8, word_timestamps=contender == "batched+words")
        segments = list(segments)
        text = " ".join(segment.text for segment in segments)
        spans = [(segment.start, segment.end) for segment in segments if segment.text.strip()]
        extra = {}
    wall = time.perf_counter() - began
    return {"contender": contender, "wall_s": round(wall, 2), "duration_s": round(duration, 1),
            "rtf": round(wall / duration, 4), "wer": round(jiwer.wer(normalise(reference), normalise(text)), 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "foreign_as_text_s": _foreign_as_text(path, spans), **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", default="shared,10min,field,mixed")
    parser.add_argument("--contenders", default="batched,batched+words,ours", help=f"of {','.join(CONTENDERS)}")
    parser.add_argument("--one", nargs=3, metavar=("CONTENDER", "FILE", "REFERENCE_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from models.registry import Registry
    model_dir = str(Registry().load("whisper-base").path)
    if args.one:
        contender, path, reference = args.one
        print(json.dumps(run_one(contender, Path(path), Path(reference).read_text(), model_dir)))
        return 0
    wanted = args.recordings.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="evidence-bench-") as scratch:
        folder = Path(scratch)
        for name, (path, reference) in make_recordings(folder, wanted).items():
            ref_file = folder / f"{name}.txt"
            ref_file.write_text(reference)
            for contender in args.contenders.split(","):
                done = subprocess.run([sys.executable, __file__, "--one", contender, str(path), str(ref_file)],
                                      capture_output=True, text=True, check=True)
                row = {"recording": name, **json.loads(done.stdout.splitlines()[-1])}
                results.append(row)
                print(json.dumps(row), flush=True)
    for row in results:
        for baseline in ("batched", "batched+words"):
            base = next((r for r in results if r["recording"] == row["recording"] and r["contender"] == baseline),
                        None)
            if base:
                row[f"time_vs_{baseline}"] = round(row["wall_s"] / base["wall_s"], 2)
                row[f"wer_minus_{baseline}"] = round(row["wer"] - base["wer"], 4)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"transcribe-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"benchmark": "transcribe", "when": datetime.now(timezone.utc).isoformat(),
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "model": "whisper-base int8, CPU", "results": results}, indent=2) + "\n")
    print(f"{'recording':<8} {'contender':<14} {'wall s':>8} {'RTF':>7} {'WER':>6} {'MiB':>7} {'vs batched':>10} "
          f"{'vs +words':>9} {'foreign as text s':>17}")
    for r in results:
        print(f"{r['recording']:<8} {r['contender']:<14} {r['wall_s']:>8} {r['rtf']:>7} {r['wer']:>6} "
              f"{r['peak_rss_mib']:>7} {r.get('time_vs_batched', ''):>10} {r.get('time_vs_batched+words', ''):>9} "
              f"{'' if r['foreign_as_text_s'] is None else r['foreign_as_text_s']:>17}")
    print(f"written to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
