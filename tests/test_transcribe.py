"""The transcribe step with the real Whisper model on real Russian speech, and the routes around it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jiwer
import pytest
from speech_fixtures import join, normalise, russian_set, spoken, tiny_ctc_model
from speech_fixtures import transcribe as run
from support import Cli, ffmpeg

from models.registry import ModelDamaged, ModelMissing, Registry
from pipelines.errors import RejectedInput

GERMAN = ("Guten Tag. Ich heiße Anna und ich wohne seit vielen Jahren in Berlin. Heute ist das Wetter schön, "
          "und wir gehen am Nachmittag in den Park.")
DRAFT_TEXT = "салам алейкум"


@pytest.fixture(scope="session")
def models() -> Registry:
    registry = Registry()
    try:
        registry.load("whisper-base")
    except ModelMissing as exc:
        pytest.fail(f"{exc} (the set-up command installs it)")
    return registry


def text_between(transcript: dict, start: float, end: float) -> str:
    return " ".join(s["text"] for s in transcript["segments"] if s["text"] and start - 0.5 <= s["start"] < end)


@pytest.mark.slow
def test_russian_is_transcribed_with_a_low_word_error_rate(shared_data: Path, models: Registry, tmp_path: Path):
    # Every third clip of the set (27 of 80, about two minutes of speech): the whole set is the transcription
    # benchmark's (benchmarks/transcribe.py), which a test run cannot afford on 2 cores.
    placed = join(russian_set(shared_data / "speech-ru")[::3], 1.0, tmp_path / "ru.wav")
    transcript = run(tmp_path / "ru.wav", tmp_path / "out", models)
    hypothesis = normalise(" ".join(s["text"] for s in transcript["segments"]))
    error = jiwer.wer(normalise(" ".join(p.text for p in placed)), hypothesis)
    assert error <= 0.25, error
    summary = transcript["summary"]
    # Every second of speech is accounted for; on one speaker reading Russian, next to nothing is left for a
    # person but the clip spelling out Latin letters, "Эм Ай Эс Ди Эн" (heard alone it sounds English).
    [letters] = [p.end - p.start for p in placed if p.text.startswith("Эм Ай Эс")]
    assert summary["covered_s"] >= 0.95 * summary["speech_s"]
    assert summary["needs_human_s"] <= 0.01 * summary["speech_s"] + letters
    text = (tmp_path / "out" / "transcript.txt").read_text()
    assert "[" in text and "Наберите новый номер" in text
    assert "unverified until a person checks it" in text and "machine, unverified: whisper-base]" in text
    assert (tmp_path / "out" / "transcript.vtt").read_text().startswith("WEBVTT")
    assert " --> " in (tmp_path / "out" / "transcript.srt").read_text()


def test_silence_and_noise_give_no_text(models: Registry, tmp_path: Path):
    quiet = tmp_path / "quiet.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-f", "lavfi", "-i",
           "anoisesrc=color=pink:amplitude=0.3:sample_rate=16000", "-filter_complex",
           "[0]atrim=duration=60[a];[1]atrim=duration=60[b];[a][b]concat=n=2:v=0:a=1", str(quiet))
    transcript = run(quiet, tmp_path / "out", models)
    assert [s["text"] for s in transcript["segments"] if s["text"]] == []


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, shared_data_module) -> tuple[Path, list]:
    """Russian, German (spoken by espeak-ng), Russian, with silence between."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed to speak the non-Russian part (the set-up command installs it)")
    folder = tmp_path_factory.mktemp("mixed")
    russian = russian_set(shared_data_module / "speech-ru")
    by_text = dict(russian)
    pick = [next(text for text in by_text if text.startswith(words)) for words in
            ("На данный момент", "Благодарим за звонок", "Наберите новый номер")]
    parts = [(pick[0], by_text[pick[0]]), ("", spoken(GERMAN, "de", folder)), (pick[1], by_text[pick[1]]),
             (pick[2], by_text[pick[2]])]
    return folder / "mixed.wav", join(parts, 3.0, folder / "mixed.wav")


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    from support import SHARED_DATA
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data folder {SHARED_DATA} (../shared/data) is not there")
    return SHARED_DATA


def test_other_speech_is_never_written_as_russian_and_needs_a_person(mixed, models: Registry, tmp_path: Path):
    path, placed = mixed
    transcript = run(path, tmp_path / "out", models)
    german = placed[1]
    assert text_between(transcript, german.start, german.end) == "", "German speech was written as Russian"
    gaps = [s for s in transcript["segments"] if s["status"] == "needs_human"]
    assert gaps, transcript["segments"]
    assert abs(gaps[0]["start"] - german.start) <= 1.0 and abs(gaps[-1]["end"] - german.end) <= 1.0
    russian = (placed[0], placed[2], placed[3])
    for part in russian:  # the Russian parts are transcribed, each where it starts
        first = next(s for s in transcript["segments"] if s["text"] and s["start"] >= part.start - 0.5)
        assert abs(first["start"] - part.start) <= 0.5, (first, part)
    heard = " ".join(text_between(transcript, part.start, part.end) for part in russian)
    assert jiwer.wer(normalise(" ".join(part.text for part in russian)), normalise(heard)) <= 0.3
    txt = (tmp_path / "out" / "transcript.txt").read_text()
    assert "[needs human transcription 00:00:" in txt


def test_declared_chechen_goes_to_its_model_as_a_labelled_draft(mixed, tmp_path: Path):
    path, placed = mixed
    folder = tiny_ctc_model(tmp_path / "ce-model", DRAFT_TEXT)
    models = Registry(local={"tiny-ce": {"kind": "ctc-onnx", "path": str(folder)}})
    transcript = run(path, tmp_path / "out", models, languages=("ru", "ce"), models="ce=tiny-ce")
    drafts = [s for s in transcript["segments"] if s["status"] == "draft_other_model"]
    assert drafts and all(s["text"] == DRAFT_TEXT for s in drafts)
    assert all("probably Chechen" in s["label"] and "unverified machine draft" in s["label"] for s in drafts)
    assert abs(drafts[0]["start"] - placed[1].start) <= 1.0
    assert transcript["models"]["ce"]["kind"] == "ctc-onnx"
    assert "[unverified machine draft" in (tmp_path / "out" / "transcript.txt").read_text()


def test_a_tampered_or_missing_model_is_refused_with_the_fix(models: Registry, tmp_path: Path):
    copy = tmp_path / "cache" / "whisper-base"
    shutil.copytree(models.location(models.spec("whisper-base")), copy)
    (copy / "config.json").chmod(0o644)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("}", " }", 1))
    with pytest.raises(ModelDamaged, match="evidence models install whisper-base"):
        Registry(tmp_path / "cache").load("whisper-base")
    with pytest.raises(ModelMissing, match="evidence models install whisper-base"):
        Registry(tmp_path / "empty").load("whisper-base")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    with pytest.raises(ModelMissing, match="lacks model.onnx"):
        Registry(local={"x": {"kind": "ctc-onnx", "path": str(not_a_model)}}).load("x")


@pytest.mark.slow
def test_intake_transcribes_and_reuses_the_transcript_when_only_probe_changes(cli: Cli, tiny_video: Path):
    evidence_id = cli.json("ingest", tiny_video, "--languages", "ru")["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    shown = cli.json("show", evidence_id)
    [first] = shown["runs"]
    assert {"transcript.json", "transcript.vtt", "transcript.srt", "transcript.txt"} <= set(first["outputs"])
    assert shown["transcript"]["has_audio"] is True
    assert "transcript " in cli("show", evidence_id).stdout
    cli("reprocess", evidence_id, "--set", "probe.decode_seconds=2")
    cli("reprocess", evidence_id, "--set", "transcribe.beam_size=1")
    cli("worker", "--once")
    runs = {}
    for folder in (cli.home / "store" / evidence_id / "runs").iterdir():
        record = json.loads((folder / "run.json").read_text())
        runs[json.dumps(record["params"], sort_keys=True)] = record
    records = list(runs.values())
    probe_only = next(r for r in records if r["params"]["probe.decode_seconds"] == 2.0)
    beam = next(r for r in records if r["params"]["transcribe.beam_size"] == 1)
    reused = next(s for s in probe_only["steps"] if s["name"] == "transcribe")
    assert reused["reused_from"] == first["run_id"]
    assert probe_only["outputs"]["transcript.json"] == first["outputs"]["transcript.json"]
    assert "reused_from" not in next(s for s in beam["steps"] if s["name"] == "transcribe")
    assert probe_only["models"]["transcribe"]["ru"]["files"]["model.bin"].startswith("d01c3014")
    # Masking, the slowest step, is reused too: the stored masked video (signed) is signed afresh for the new
    # run (new bytes, the same pictures) and verifies on its own, back to the original.
    for record in (probe_only, beam):
        masking = next(s for s in record["steps"] if s["name"] == "redact")
        assert masking["reused_from"] in (first["run_id"], probe_only["run_id"])   # the newer of the two, if any
        assert "reused_from" not in next(s for s in record["steps"] if s["name"] == "sign")
        assert record["outputs"]["redacted.mp4"] != first["outputs"]["redacted.mp4"]
        assert record["facts"]["redact"] == json.loads((cli.home / "store" / evidence_id / "runs" / first["run_id"]
                                                        / "run.json").read_text())["facts"]["redact"]
        signed = cli.home / "store" / evidence_id / "runs" / record["run_id"] / "redacted.mp4"
        verdict = cli.json("verify", signed, "--original", cli.home / "store" / evidence_id / "original"
                           / "original.mp4")
        assert verdict["ok"] and verdict["original_sha256"] == evidence_id
    assert cli.json("audit")["ok"]


def test_a_video_without_sound_has_a_no_audio_transcript(cli: Cli, tmp_path: Path):
    silent = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(silent))
    evidence_id = cli.json("ingest", silent)["ingested"][0]["evidence_id"]
    cli("worker", "--once")
    [run_] = cli.json("show", evidence_id)["runs"]
    assert run_["status"] == "committed"
    assert any("no audio stream" in e for e in run_["errors"])
    assert cli.json("show", evidence_id)["transcript"]["has_audio"] is False


def test_transcribe_command_on_a_file_outside_the_store(cli: Cli, shared_data: Path, tmp_path: Path):
    report = cli.json("transcribe", shared_data / "speech-ru" / "basic-pbx-ivr-main.flac", "--out", tmp_path / "t")
    assert report["has_audio"] and report["speech_s"] > 15 and report["needs_human_s"] == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "transcript.json", "transcript.srt", "transcript.txt", "transcript.vtt"]
    assert "Благодарим за звонок" in (tmp_path / "t" / "transcript.txt").read_text()
    assert not (cli.home / "store").exists() or not any(
        p.name for p in (cli.home / "store").iterdir() if len(p.name) == 64), "nothing is stored"


def test_a_worker_refuses_to_start_with_a_configured_model_that_is_not_a_model(cli: Cli, tmp_path: Path):
    (tmp_path / "not-a-model").mkdir()
    done = cli("worker", "--once", check=False, EVIDENCE_TRANSCRIBE__MODELS="ce=nothing")
    assert done.returncode == 1 and "no model named 'nothing'" in done.stderr
    config = tmp_path / "evidence.toml"
    config.write_text(f'[transcribe.models.ce]\nkind = "ctc-onnx"\npath = "{tmp_path / "not-a-model"}"\n')
    done = cli("worker", "--once", check=False, EVIDENCE_CONFIG=str(config))
    assert done.returncode == 1 and "lacks model.onnx" in done.stderr and "Traceback" not in done.stderr


def test_sound_far_longer_than_the_file_declares_is_refused_without_filling_the_disk(models: Registry,
                                                                                     tmp_path: Path):
    """A container can declare 10 s and hold hours: what is written is bounded by what the probe found."""
    long = tmp_path / "long.m4a"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.1:sample_rate=16000:duration=200", "-c:a", "aac",
           "-b:a", "16k", str(long))
    with pytest.raises(RejectedInput, match="runs past 75 s, far longer than the 10 s the file declares"):
        run(long, tmp_path / "out", models, facts={"has_audio": True, "duration_s": 10.0})
    assert not (tmp_path / "out" / "audio.s16le").exists()
    honest = run(long, tmp_path / "honest", models, facts={"has_audio": True, "duration_s": 200.0})
    assert honest["duration_s"] == pytest.approx(200, abs=1)
