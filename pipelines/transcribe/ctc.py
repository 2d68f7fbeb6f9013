"""A CTC speech model exported to ONNX, run with onnxruntime: the route for a language Whisper lacks.

Meta's MMS-1B-all covers Chechen (``che``) as a per-language adapter; an ONNX
export of it with its Chechen adapter merged is such a model (its weights are
CC-BY-NC-4.0: not for commercial use). The model folder holds ``model.onnx``
(input: 16 kHz mono float32 samples, shape [1, samples]; output: logits,
shape [1, frames, vocabulary]) and ``vocab.json`` (the vocabulary: a list of
tokens by index, or a mapping of token to index). ``config.json`` may say
``{"blank": 0, "word_delimiter": "|", "normalize": true}`` (the defaults).
Decoding is greedy: the likeliest token per frame, repeats collapsed, blanks
dropped. Its text is always labelled an unverified machine draft.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnxruntime


@functools.lru_cache(maxsize=2)
def load(path: str, threads: int, files: tuple = ()) -> Engine:
    """A loaded model, kept for the next chunk; ``files`` (its verified hashes) keys it, as for Whisper."""
    return Engine(Path(path), threads)


class Engine:
    def __init__(self, folder: Path, threads: int):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        if isinstance(vocab, dict):
            vocab = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
        self.vocab: list[str] = list(vocab)
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
        self.blank = int(config.get("blank", 0))
        self.delimiter = str(config.get("word_delimiter", "|"))
        self.normalize = bool(config.get("normalize", True))
        self.input = self.session.get_inputs()[0].name

    def transcribe(self, audio: np.ndarray) -> tuple[str, float]:
        """(text, mean probability of the tokens it kept) for one chunk of 16 kHz samples."""
        samples = audio.astype(np.float32)
        if self.normalize:
            samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        logits = self.session.run(None, {self.input: samples[None, :]})[0][0]
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = exp / exp.sum(axis=-1, keepdims=True)
        best = probs.argmax(axis=-1)
        kept, confidence, previous = [], [], None
        for frame, token in enumerate(best):
            if token != previous and token != self.blank:
                kept.append(self.vocab[token] if token < len(self.vocab) else "")
                confidence.append(float(probs[frame, token]))
            previous = token
        text = "".join(kept).replace(self.delimiter, " ")
        return " ".join(text.split()), float(np.mean(confidence)) if confidence else 0.0
