"""A CTC speech model exported to ONNX, run with onnxruntime: the route for a language Whisper lacks.

Two layouts of a model folder are read:

- sherpa-onnx's, as it publishes Meta's Omnilingual ASR CTC models (Apache-2.0;
  Chechen is ``che_Cyrl``): ``model.onnx`` or ``model.int8.onnx`` and
  ``tokens.txt`` (a line ``TOKEN ID`` per token; a line of only an id is the
  space; the blank is ``<blk>``, ``<blank>`` or ``<eps>`` where one is
  listed, else id 0; a leading ``▁`` marks a word's start);
- a wav2vec2-style export: ``model.onnx`` and ``vocab.json`` (a list of
  tokens by index, or a mapping of token to index, ``|`` between words).

``config.json`` may override ``{"blank": ..., "word_delimiter": ...,
"normalize": true, "max_input_s": 30}``. The model takes 16 kHz mono float32
samples ([1, samples]), and its own lengths input where it has one (named
by the model); it gives logits [1, frames, vocabulary], and lengths where it
has that output. Longer audio than ``max_input_s`` is cut into windows of
that length (Omnilingual models take at most 40 s). Samples are normalised
to zero mean and unit variance, as both exports expect. Decoding is greedy:
the likeliest token per frame, repeats collapsed, blanks dropped. Its text is
always labelled an unverified machine draft.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnxruntime

from models.registry import ModelDamaged
from pipelines.transcribe.audio import SAMPLE_RATE

_BLANKS = ("<blk>", "<blank>", "<eps>")


@functools.lru_cache(maxsize=2)
def load(path: str, threads: int, files: tuple = ()) -> Engine:
    """A loaded model, kept for the next chunk; ``files`` (its verified hashes) keys it, as for Whisper."""
    return Engine(Path(path), threads)


def read_tokens(path: Path) -> list[str]:
    """sherpa-onnx's tokens.txt: ``TOKEN ID`` a line, in any order; a line holding only an id is the space."""
    found: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        token, _, index = line.rpartition(" ")
        if not index.isdigit() or int(index) > 10_000_000:
            raise ModelDamaged(f"{path}: line {number} is not 'TOKEN ID'; not a sherpa-onnx tokens.txt")
        found[int(index)] = token if token else " "
    if not found:
        raise ModelDamaged(f"{path} lists no tokens")
    return [found.get(i, "") for i in range(max(found) + 1)]


def read_vocab(path: Path) -> list[str]:
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(vocab, dict):
        vocab = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    return [str(token) for token in vocab]


class Engine:
    def __init__(self, folder: Path, threads: int):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3   # errors only: its warnings would land between JSON log lines
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = folder / "model.onnx" if (folder / "model.onnx").is_file() else folder / "model.int8.onnx"
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        if (folder / "tokens.txt").is_file():
            self.vocab = read_tokens(folder / "tokens.txt")
            listed = [i for i, token in enumerate(self.vocab) if token in _BLANKS]
            self.blank, self.delimiter = (listed[0] if listed else 0), "▁"
        else:
            self.vocab, self.blank, self.delimiter = read_vocab(folder / "vocab.json"), 0, "|"
        self.blank = int(config.get("blank", self.blank))
        self.delimiter = str(config.get("word_delimiter", self.delimiter))
        self.normalize = bool(config.get("normalize", True))
        self.max_samples = int(float(config.get("max_input_s", 30)) * SAMPLE_RATE)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input = inputs[0].name
        self.lengths_input = inputs[1].name if len(inputs) > 1 else None
        self.lengths_type = np.int32 if len(inputs) > 1 and "int32" in inputs[1].type else np.int64
        self.lengths_output = len(outputs) > 1

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """(text, mean probability of the tokens it kept) for 16 kHz samples, window by window."""
        texts, confidence = [], []
        for start in range(0, max(len(audio), 1), self.max_samples):
            text, kept = self._window(audio[start:start + self.max_samples])
            texts.append(text)
            confidence += kept
        return " ".join(" ".join(texts).split()), float(np.mean(confidence)) if confidence else 0.0

    def _window(self, audio: np.ndarray) -> tuple[str, list[float]]:
        samples = audio.astype(np.float32)
        if self.normalize and len(samples):
            samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-5)
        feeds = {self.input: samples[None, :]}
        if self.lengths_input:
            feeds[self.lengths_input] = np.array([len(samples)], dtype=self.lengths_type)
        found = self.session.run(None, feeds)
        logits = found[0][0]
        if self.lengths_output:
            logits = logits[:int(np.asarray(found[1]).reshape(-1)[0])]
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = exp / exp.sum(axis=-1, keepdims=True)
        best = probs.argmax(axis=-1)
        kept, confidence, previous = [], [], None
        for frame, token in enumerate(best):
            if token != previous and token != self.blank:
                kept.append(self.vocab[token] if token < len(self.vocab) else "")
                confidence.append(float(probs[frame, token]))
            previous = token
        return "".join(kept).replace(self.delimiter, " "), confidence
