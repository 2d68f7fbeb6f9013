"""Every second of speech ends in exactly one segment, on real speech: Russian from ../shared/data, the other
languages spoken by espeak-ng. Language switches inside a chunk, speech Whisper skips, honest labels, and the
machine-made marks every transcript file carries."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import jiwer
import numpy as np
import pytest
from speech_fixtures import Placed, compose, normalise, russian_set, spoken, tiny_ctc_model, transcribe
from support import SHARED_DATA, Cli, ffmpeg

from models.registry import ModelDamaged, Registry
from pipelines.transcribe import accounting, ctc
from pipelines.transcribe.language import Identified
from pipelines.transcribe.step import _label

OTHER = {
    "de": "Guten Tag. Ich heiße Anna und ich wohne seit vielen Jahren in Berlin. Heute ist das Wetter schön.",
    "it": "Buongiorno. Mi chiamo Marco e abito a Roma da molti anni. Oggi il tempo è bello e andiamo al parco.",
    "ka": "გამარჯობა. მე მქვია ნინო და ვცხოვრობ თბილისში. დღეს კარგი ამინდია და ჩვენ პარკში მივდივართ.",
    "en": "Good morning. My name is Peter and I have lived in London for many years. The weather is fine today.",
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict:
    """Russian clips by their first words, and a few sentences in other languages."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data folder {SHARED_DATA} (../shared/data) is not there")
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed to speak the other languages (the set-up command installs it)")
    folder = tmp_path_factory.mktemp("voices")
    russian = russian_set(SHARED_DATA / "speech-ru")
    return {"ru": russian, **{lang: spoken(text, lang, folder) for lang, text in OTHER.items()}}


def ru(voices: dict, words: str) -> tuple[str, str, object]:
    text, samples = next((t, s) for t, s in voices["ru"] if t.startswith(words))
    return "ru", text, samples


def other(voices: dict, lang: str, seconds: float | None = None) -> tuple[str, str, object]:
    samples = voices[lang]
    return lang, "", samples[:int(seconds * 16000)] if seconds else samples


def machine_words_in(transcript: dict, part: Placed, margin: float = 0.5) -> list[str]:
    """Words of machine text whose middle lies inside ``part`` (less a margin for timing)."""
    return [w["word"] for s in transcript["segments"] if s["text"] and s["status"] != "draft_other_model"
            for w in s.get("words") or [] if part.start + margin < (w["start"] + w["end"]) / 2 < part.end - margin]


def covered(transcript: dict, part: Placed, status: str | None = None) -> float:
    """The share of the speech inside ``part`` that segments (of one status) cover."""
    speech = accounting.intersection(accounting.merged(map(tuple, transcript["speech"])), [(part.start, part.end)])
    spans = accounting.merged((s["start"], s["end"]) for s in transcript["segments"]
                              if status is None or s["status"] == status)
    return accounting.total(accounting.intersection(speech, spans)) / max(accounting.total(speech), 1e-9)


def check_nothing_lost(transcript: dict, placed: list[Placed]) -> None:
    """The invariant: all speech is in segments, no other language is written as Russian, and every
    non-Russian part is left to a person (or another model's draft)."""
    summary = transcript["summary"]
    assert summary["covered_s"] + summary["unaccounted_s"] == pytest.approx(summary["speech_s"], abs=0.15)
    assert accounting.uncovered([tuple(s) for s in transcript["speech"]], transcript["segments"]) == []
    assert accounting.overlaps(transcript["segments"]) == []
    for part in placed:
        assert covered(transcript, part) >= 0.85, (part, transcript["segments"])
        if part.language != "ru":
            assert machine_words_in(transcript, part) == [], f"{part.language} speech written as Russian"
            assert covered(transcript, part, "needs_human") >= 0.8, (part, transcript["segments"])


def heard(transcript: dict, part: Placed) -> str:
    return " ".join(w["word"] for s in transcript["segments"] if s["status"] in ("machine", "machine_flagged")
                    for w in s["words"] if part.start - 0.3 < (w["start"] + w["end"]) / 2 < part.end + 0.3)


def test_german_after_a_short_pause_in_a_russian_chunk_is_not_lost(voices, registry, tmp_path):
    # The pause (1.5 s) shrinks under the merge gap once voice detection pads the speech around it: one chunk.
    placed = compose([0.5, ru(voices, "На данный момент"), 0.4, ru(voices, "Введите пароль"), 0.4,
                      ru(voices, "Наберите новый номер"), 0.4, ru(voices, "Абонент не отвечает"), 1.5,
                      other(voices, "de", 6.0), 1.0], tmp_path / "a.wav")
    transcript = transcribe(tmp_path / "a.wav", tmp_path / "out", registry, ("ru", "ce"))
    check_nothing_lost(transcript, placed)
    for part in placed[:4]:  # every Russian sentence, the last one before the German too, is transcribed
        assert jiwer.wer(normalise(part.text), normalise(heard(transcript, part))) <= 0.35, part


def test_german_between_russian_with_short_pauses_is_not_covered_by_a_stretched_word(voices, registry, tmp_path):
    long = sorted(voices["ru"], key=lambda clip: len(clip[1]))
    placed = compose([0.5, ("ru", long[-3][0], long[-3][1][:10 * 16000]), 0.3, other(voices, "de", 6.6), 0.3,
                      ("ru", long[-2][0], long[-2][1][:12 * 16000]), 1.0], tmp_path / "b.wav")
    transcript = transcribe(tmp_path / "b.wav", tmp_path / "out", registry)
    check_nothing_lost(transcript, placed)
    assert heard(transcript, placed[2]).strip(), "the Russian after the German is transcribed"


def test_italian_between_russian_prompts_is_flagged_and_the_last_sentence_kept(voices, registry, tmp_path):
    placed = compose([0.5, ru(voices, "На данный момент"), 0.6, other(voices, "it"), 0.6,
                      ru(voices, "Наберите новый номер"), 1.0], tmp_path / "c.wav")
    transcript = transcribe(tmp_path / "c.wav", tmp_path / "out", registry)
    check_nothing_lost(transcript, placed)
    last = placed[-1]
    assert jiwer.wer(normalise(last.text), normalise(heard(transcript, last))) <= 0.35


@pytest.mark.parametrize("seed", [3, 11, 2026])
def test_random_mixtures_of_languages_and_silence_lose_nothing(voices, registry, tmp_path, seed):
    """Property: whatever the order of Russian, other languages and pauses (short and long), nothing is lost."""
    rng = random.Random(seed)
    parts: list = [round(rng.uniform(0.2, 1.0), 2)]
    for _ in range(rng.randint(4, 6)):
        if rng.random() < 0.55:
            text, samples = rng.choice(voices["ru"])
            parts.append(("ru", text, samples))
        else:
            lang = rng.choice(sorted(OTHER))
            parts.append(other(voices, lang, rng.uniform(3.0, 7.0)))
        parts.append(round(rng.choice([rng.uniform(0.15, 0.6), rng.uniform(0.6, 2.5)]), 2))
    placed = compose(parts, tmp_path / "mix.wav")
    transcript = transcribe(tmp_path / "mix.wav", tmp_path / "out", registry, ("ru", "ce"))
    check_nothing_lost(transcript, placed)


def test_labels_name_a_sure_language_and_say_when_it_was_not_declared():
    german = Identified([("de", 0.87), ("en", 0.05), ("nl", 0.02)], "de")
    unsure = Identified([("kk", 0.41), ("tt", 0.22), ("ru", 0.1)], None)
    assert _label(german, ("ru", "ce")) == ("", "probably German (not declared)")
    assert _label(german, ("ru", "de")) == ("de", "probably German")
    assert _label(unsure, ("ru", "ce")) == ("ce", "probably Chechen")
    assert _label(unsure, ("ru",)) == ("", "language uncertain (kk 0.41, tt 0.22, ru 0.10)")


def test_accounting_refuses_a_transcript_that_loses_or_doubles_speech():
    speech = [(1.0, 4.0), (5.0, 9.0)]
    whole = [{"start": 0.8, "end": 4.1, "status": "machine"}, {"start": 4.9, "end": 9.2, "status": "needs_human"}]
    account = accounting.close(speech, whole)
    assert account["speech_s"] == 7.0 and account["covered_s"] == 7.0
    assert account["speech_by_status_s"] == {"machine": 3.0, "needs_human": 4.0}
    with pytest.raises(accounting.AccountingError, match="5.00-9.00 s is in no segment"):
        accounting.close(speech, whole[:1])
    with pytest.raises(accounting.AccountingError, match="in two segments"):
        accounting.close(speech, [*whole, {"start": 3.0, "end": 6.0, "status": "machine"}])
    # Slack of word timing between two segments is tolerated; a whole word is not.
    assert accounting.uncovered(speech, [{"start": 1.3, "end": 4.0}, {"start": 5.0, "end": 9.0}]) == []
    assert accounting.uncovered(speech, [{"start": 1.0, "end": 4.0}, {"start": 5.0, "end": 8.2}]) == [(8.2, 9.0)]


@pytest.fixture(scope="module")
def georgian_tail(tmp_path_factory, voices) -> Path:
    """A video whose interview ends in 6 s of Georgian after long Russian speech."""
    folder = tmp_path_factory.mktemp("tail")
    long = max(voices["ru"], key=lambda clip: len(clip[1]))
    compose([0.5, ("ru", long[0], long[1][:24 * 16000]), 0.8, other(voices, "ka", 6.8), 1.0], folder / "tail.wav")
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=33", "-i", str(folder / "tail.wav"), "-shortest",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "tail.mp4"))
    return folder / "tail.mp4"


@pytest.mark.slow
def test_a_georgian_tail_in_a_full_intake_is_left_to_a_person(cli: Cli, georgian_tail: Path):
    evidence_id = cli.json("ingest", georgian_tail, "--languages", "ru")["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    [run] = cli.json("show", evidence_id)["runs"]
    transcript = json.loads(next((cli.home / "store" / evidence_id / "runs").glob("*/transcript.json")).read_text())
    tail = Placed("", 25.3, 32.1, "ka")
    check_nothing_lost(transcript, [tail])
    summary = cli.json("show", evidence_id)["transcript"]
    assert summary["needs_human_s"] >= 5 and summary["made_by"]["needs_human"] >= 1
    assert "machine-made (unverified until a person checks them)" in cli("show", evidence_id).stdout
    run_dir = next((cli.home / "store" / evidence_id / "runs").glob("*/transcript.json")).parent
    for name in ("transcript.txt", "transcript.vtt"):
        text = (run_dir / name).read_text()
        assert "unverified until a person checks it" in text and "[needs human transcription" in text
    assert "WEBVTT\n\nNOTE\n" in (run_dir / "transcript.vtt").read_text()
    srt = (run_dir / "transcript.srt").read_text()
    assert "[machine, unverified: whisper-base]" in srt
    marked = json.loads((run_dir / "transcript.json").read_text())
    assert "unverified" in marked["notice"]
    machine = [s for s in marked["segments"] if s["status"] == "machine"]
    assert machine and all(s["made_by"] == "machine" and s["model"] == "whisper-base" and not s["verified"]
                           for s in machine)
    assert run["status"] == "committed"


def test_a_chechen_model_in_sherpa_onnx_layout_installs_from_a_folder_and_drafts(cli: Cli, voices, tmp_path):
    """Omnilingual ASR as sherpa-onnx publishes it: model.int8.onnx, tokens.txt, an input named x, and here a
    length input and output; installed with its files hashed; onnxruntime leaves nothing under the home."""
    folder = tiny_ctc_model(tmp_path / "omni", "салам алейкум", layout="sherpa", lengths=True)
    (folder / "test_wavs").mkdir()
    (folder / "README.md").write_text("a tiny model\n")
    (folder / "link.onnx").symlink_to(folder / "model.int8.onnx")
    home, models = tmp_path / "account", tmp_path / "models"
    shutil.copytree(Registry().cache_dir / "whisper-base", models / "whisper-base")  # a cache of the test's own
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "EVIDENCE_MODELS__DIR": str(models)}
    installed = cli.json("models", "install", "tiny-omni", "--from", folder, "--licence", "Apache-2.0", **env)
    assert installed["kind"] == "ctc-onnx" and sorted(installed["files"]) == ["README.md", "model.int8.onnx",
                                                                               "tokens.txt"]
    record = (models / "tiny-omni.model.toml").read_text()
    assert installed["files"]["model.int8.onnx"] in record and "Apache-2.0" in record
    placed = compose([0.5, ru(voices, "На данный момент"), 1.5, other(voices, "ka", 5.0), 1.0], tmp_path / "x.wav")
    out = tmp_path / "t"
    cli("transcribe", tmp_path / "x.wav", "--languages", "ru,ce", "--set", "models=ce=tiny-omni", "--out", out, **env)
    transcript = json.loads((out / "transcript.json").read_text())
    drafts = [s for s in transcript["segments"] if s["status"] == "draft_other_model"]
    assert drafts and all(s["text"] == "салам алейкум" and s["model"] == "tiny-omni" for s in drafts)
    assert any(abs(s["start"] - placed[1].start) <= 1.0 for s in drafts)
    assert "[unverified machine draft" in (out / "transcript.txt").read_text()
    assert not (home / ".cache" / "Microsoft").exists(), "onnxruntime wrote its telemetry under the home"
    # A changed file is refused at the next load; a folder behind a link is not followed.
    target = models / "tiny-omni" / "tokens.txt"
    target.chmod(0o644)
    target.write_text(target.read_text() + "x 99\n")
    done = cli("transcribe", tmp_path / "x.wav", "--languages", "ru,ce", "--set", "models=ce=tiny-omni",
               "--out", tmp_path / "t2", check=False, **env)
    assert done.returncode != 0 and "tokens.txt does not match" in done.stderr
    (tmp_path / "via-link").symlink_to(folder)
    done = cli("models", "install", "other", "--from", tmp_path / "via-link", check=False, **env)
    assert done.returncode != 0 and "not a folder" in done.stderr


def test_long_input_is_cut_into_windows_the_model_takes(tmp_path):
    folder = tiny_ctc_model(tmp_path / "omni", "да", layout="sherpa")
    (folder / "config.json").write_text('{"max_input_s": 4}')
    engine = ctc.Engine(folder, 1)
    text, confidence = engine.transcribe(np.zeros(10 * 16000, dtype=np.float32))
    assert text == "да да да" and confidence > 0.9  # three windows of at most 4 s


def test_a_tokens_file_that_is_not_one_is_refused_with_the_reason(tmp_path):
    folder = tiny_ctc_model(tmp_path / "omni", "да", layout="sherpa")
    (folder / "tokens.txt").write_text("<blk> 0\nд one\n")
    with pytest.raises(ModelDamaged, match="line 2 is not 'TOKEN ID'"):
        ctc.Engine(folder, 1)
