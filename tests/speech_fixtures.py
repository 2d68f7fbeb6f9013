"""Speech recordings for transcription tests and benchmarks, made from the shared Russian set.

Clips are decoded, joined with silence between them, and written as 16 kHz
WAV; where each clip starts in the joined file is returned with its
reference text, so tests can check both words and times.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import decode_audio

RATE = 16000


@dataclass(frozen=True)
class Placed:
    text: str        # reference transcript ("" for a part in another language)
    start: float     # seconds into the joined file
    end: float
    language: str = "ru"


def references(folder: Path) -> dict[str, str]:
    with open(folder / "transcripts.tsv", encoding="utf-8") as handle:
        return {row["file"]: row["text"] for row in csv.DictReader(handle, delimiter="\t")}


# The shared set's references write numbers as digits ("нажмите 1"); a transcript may spell them.
_NUMBERS = dict(enumerate("ноль один два три четыре пять шесть семь восемь девять десять".split()))


def normalise(text: str) -> str:
    """Lower case, ё as е, no punctuation, single spaces, 0-10 as words: how word error rates are counted."""
    words = re.sub(r"[^\w\s]", " ", text.lower().replace("ё", "е")).split()
    return " ".join(_NUMBERS.get(int(word), word) if word.isdigit() else word for word in words)


def spoken(text: str, language: str, folder: Path) -> np.ndarray:
    """``text`` read by espeak-ng in ``language`` (a voice, e.g. "de"), as 16 kHz samples."""
    wav = folder / f"espeak-{language}.wav"
    subprocess.run(["espeak-ng", "-v", language, "-s", "150", "-w", str(wav), text], check=True)
    return decode_audio(str(wav), sampling_rate=RATE)


def join(parts: list[tuple[str, np.ndarray]], gap_s: float, out: Path) -> list[Placed]:
    """Write the parts (reference text, samples) one after another with ``gap_s`` of silence between."""
    return compose([gap_s, *[piece for text, samples in parts for piece in (("ru", text, samples), gap_s)]], out)


def write_wav(samples: np.ndarray, out: Path) -> Path:
    with wave.open(str(out), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out


def compose(parts: list[float | tuple[str, str, np.ndarray]], out: Path) -> list[Placed]:
    """Write ``parts`` one after another: a number is that many seconds of silence, a (language, reference
    text, samples) triple is speech; where each piece of speech lies in the file."""
    pieces, placed, at = [], [], 0.0
    for part in parts:
        samples = np.zeros(int(part * RATE), dtype=np.float32) if isinstance(part, float | int) else part[2]
        if not isinstance(part, float | int):
            placed.append(Placed(part[1], at, at + len(samples) / RATE, part[0]))
        pieces.append(samples)
        at += len(samples) / RATE
    write_wav(np.concatenate(pieces), out)
    return placed


def russian_set(folder: Path) -> list[tuple[str, np.ndarray]]:
    return [(text, decode_audio(str(folder / name), sampling_rate=RATE))
            for name, text in sorted(references(folder).items())]


def transcribe(path: Path, folder: Path, registry, languages=("ru",), facts=None, **overrides) -> dict:
    """The transcribe step of the intake pipeline, with its defaults, on one file: transcript.json's content."""
    from pipelines.intake import INTAKE
    from pipelines.pipeline import StepContext
    from pipelines.transcribe import step

    params = {key.split(".", 1)[1]: p.default for key, p in INTAKE.params.items() if key.startswith("transcribe.")}
    folder.mkdir(exist_ok=True)
    context = StepContext(evidence_id="", original=path, workdir=folder, params={**params, **overrides},
                          facts={"probe": facts or {"has_audio": True}}, models=registry,
                          languages=tuple(languages))
    return json.loads(step.run(context).files["transcript.json"].read_text())


def tiny_ctc_model(folder: Path, text: str, layout: str = "wav2vec2", lengths: bool = False) -> Path:
    """A CTC model whose logits spell ``text`` whatever it hears: the route, not the accuracy, is tested.

    ``layout``: "wav2vec2" (model.onnx, vocab.json, input ``input_values``) or
    "sherpa" (model.int8.onnx, tokens.txt, input ``x``: how sherpa-onnx
    publishes Omnilingual ASR); ``lengths`` adds a length input and output.
    """
    import onnx
    from onnx import TensorProto, helper

    sherpa = layout == "sherpa"
    space = " " if sherpa else "|"   # sherpa-onnx writes the space as a line holding only its id
    vocab = ["<blk>" if sherpa else "<pad>", space, *sorted(set(text.replace(" ", "")))]
    frames = []
    for ch in text:
        frames += [vocab.index(space if ch == " " else ch), 0]
    logits = np.full((1, len(frames), len(vocab)), -8.0, dtype=np.float32)
    for t, token in enumerate(frames):
        logits[0, t, token] = 8.0
    name = "x" if sherpa else "input_values"
    nodes = [
        helper.make_node("Constant", [], ["fixed"], value=helper.make_tensor(
            "fixed", TensorProto.FLOAT, logits.shape, logits.flatten().tolist())),
        helper.make_node("ReduceMean", [name], ["level"], keepdims=1),
        helper.make_node("Mul", ["level", "nothing"], ["silent"]),
        helper.make_node("Add", ["fixed", "silent"], ["logits"]),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(frames), len(vocab)])]
    initializers = [helper.make_tensor("nothing", TensorProto.FLOAT, [], [0.0]),
                    helper.make_tensor("frames", TensorProto.INT64, [1], [len(frames)])]
    if lengths:  # the lengths output is the frame count, whatever length came in (which must still be fed)
        inputs.append(helper.make_tensor_value_info(f"{name}_lens", TensorProto.INT64, [1]))
        outputs.append(helper.make_tensor_value_info("logits_lens", TensorProto.INT64, [1]))
        nodes += [helper.make_node("Mul", [f"{name}_lens", "zero"], ["no_length"]),
                  helper.make_node("Add", ["frames", "no_length"], ["logits_lens"])]
        initializers.append(helper.make_tensor("zero", TensorProto.INT64, [], [0]))
    graph = helper.make_graph(nodes, "tiny-ctc", inputs, outputs, initializer=initializers)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              folder / ("model.int8.onnx" if sherpa else "model.onnx"))
    if sherpa:
        lines = [f"{token} {index}".lstrip() for index, token in enumerate(vocab)]
        (folder / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return folder
