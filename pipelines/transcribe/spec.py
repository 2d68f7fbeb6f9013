"""What the transcribe step is, apart from how it works: its version, parameters and the models it loads.
Light to import (no Whisper, no audio library): pipelines.transcribe.step has the weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.pipeline import Param

VERSION = "2"

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


def model_names(params: Mapping[str, Any]) -> list[str]:
    """The registry's models a run with these parameters loads: the Whisper model, then one per language."""
    return [params["model"], *other_models(params["models"]).values()]
