"""What a pipeline is: a name, a version and ordered steps that are plain functions.

A step gets local files and a folder to write in; it knows nothing about
stores, queues or custody. It returns the files it made and the facts it
found. The runner does everything else.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Tools:
    """Where the media tools are, and the limits every call of them runs under."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    timeout_s: float = 600.0
    threads: int = 2                          # decoder/encoder threads; each one multiplies frame memory
    memory_limit_bytes: int = 3 * 2**30       # RLIMIT_AS of every child
    max_pixels: int = 8192 * 4320             # pixels of one frame (8K); a bigger frame is never decoded
    cpu_threads: int = 0                      # threads of model inference on the CPU (0: every core)


DEFAULT_TOOLS = Tools()


@dataclass(frozen=True)
class StepContext:
    evidence_id: str
    original: Path                      # a verified local copy; steps only read it
    workdir: Path                       # where this step writes its outputs
    params: Mapping[str, Any]           # this step's parameters ("probe.x" arrives as "x")
    facts: Mapping[str, Mapping[str, Any]]  # what earlier steps found, by step name
    tools: Tools = DEFAULT_TOOLS
    models: Any = None                  # models.registry.Registry: where steps load their models from
    languages: tuple[str, ...] = ()     # what the intake record says is spoken (ISO 639: "ru", "ce")
    outputs: Mapping[str, Path] = field(default_factory=dict)  # files of earlier steps, by output name
    progress: Callable[[int, int], None] | None = None          # (done, total) of long work, when watched
    staff: tuple[Any, ...] = ()         # enrolled staff's face embeddings, one array a person; never their names
    signing: Any = None                 # pipelines.provenance.credentials.Credentials, for steps that sign
    run_id: str = ""                    # the run this step is part of, and its pipeline ("intake-v5")
    pipeline: str = ""
    models_used: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by earlier step: role -> record


@dataclass(frozen=True)
class StepResult:
    files: Mapping[str, Path] = field(default_factory=dict)   # output name -> file in workdir
    facts: Mapping[str, Any] = field(default_factory=dict)    # goes into run.json: nothing restricted
    warnings: Sequence[str] = ()
    tools: Mapping[str, str] = field(default_factory=dict)    # tool -> version used
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # role -> model name, kind, file hashes


@dataclass(frozen=True)
class Step:
    """A step and what its result depends on, so an earlier run's result can stand in for running it again.

    ``version`` changes whenever the step's code changes what it produces;
    ``reads`` names the earlier steps whose facts or outputs it uses;
    ``fingerprint`` returns anything else it depends on (the hashes of the
    model files it would load). ``models`` names the registry's models it
    would load with the given parameters, and ``needs`` what else the worker
    must hand it (``signing``: credentials; ``staff``: the enrolled staff's
    embeddings), so that the worker asks the steps instead of knowing them.
    """

    name: str
    run: Callable[[StepContext], StepResult]
    version: str = "1"
    reads: tuple[str, ...] = ()
    fingerprint: Callable[[StepContext], Mapping[str, Any]] | None = None
    replaces: tuple[str, ...] = ()      # outputs of earlier steps this step's outputs replace (a signed copy)
    models: Callable[[Mapping[str, Any]], Sequence[str]] | None = None   # from the step's own parameters
    needs: Callable[[Mapping[str, Any]], frozenset[str]] | None = None   # likewise: "signing", "staff"


def deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call. A pipeline is declared with its steps' specs only, so
    that checking settings or answering ``status`` loads no media library (half a second a command)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


class ParameterError(ValueError):
    """A parameter that the pipeline does not have, or a value of the wrong kind or out of range."""


@dataclass(frozen=True)
class Param:
    """One pipeline parameter: its default (which fixes its type) and the range it may take."""

    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()       # the only values a text parameter may take, when given

    def coerce(self, key: str, value: Any) -> Any:
        """``value`` in the default's type, checked against the range; ParameterError otherwise."""
        kind = type(self.default)
        value = _parse(key, value, kind)
        if self.choices and value not in self.choices:
            raise ParameterError(f"parameter {key!r} takes one of {', '.join(self.choices)}, not {value!r}")
        if kind is float and not math.isfinite(value):
            raise ParameterError(f"parameter {key!r} takes a finite number, not {value!r}")
        if kind in (int, float):
            below = self.minimum is not None and value < self.minimum
            if below or (self.maximum is not None and value > self.maximum):
                raise ParameterError(f"parameter {key!r} takes {self._range()}, not {value!r}")
        return value

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"a value from {self.minimum:g} to {self.maximum:g}"
        return f"a value of at least {self.minimum:g}" if self.minimum is not None else f"at most {self.maximum:g}"


def _parse(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        try:
            if kind is bool:
                if text in ("1", "true", "yes", "on"):
                    return True
                if text in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return kind(text)
        except ValueError:
            raise ParameterError(f"parameter {key!r} takes a {kind.__name__}, not {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ParameterError(f"parameter {key!r} takes a {kind.__name__}, not {value!r}")
    return value


@dataclass(frozen=True)
class Pipeline:
    name: str
    version: str
    steps: tuple[Step, ...]
    params: Mapping[str, Param] = field(default_factory=dict)  # "step.param" -> its definition

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: param.default for key, param in self.params.items()}

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults with ``overrides`` applied, each checked against its type and range."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ParameterError(
                f"pipeline {self.name!r} has no parameter {', '.join(map(repr, unknown))} (it has: {known})"
            )
        params = self.defaults
        for key, value in overrides.items():
            params[key] = self.params[key].coerce(key, value)
        return params

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Only what differs from the defaults, in its proper type: one spelling per run."""
        resolved = self.resolve_params(params)
        return {key: value for key, value in resolved.items() if value != self.params[key].default}

    def step_params(self, step: Step, params: Mapping[str, Any]) -> dict[str, Any]:
        prefix = step.name + "."
        return {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}

    def models(self, params: Mapping[str, Any]) -> list[str]:
        """Every registry model a run with ``params`` would load, once each, in step order."""
        names = [name for step in self.steps if step.models for name in step.models(self.step_params(step, params))]
        return list(dict.fromkeys(names))

    def needs(self, params: Mapping[str, Any]) -> frozenset[str]:
        """What a run with ``params`` needs the worker to provide (see Step.needs)."""
        return frozenset().union(*(step.needs(self.step_params(step, params)) for step in self.steps if step.needs))


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. Used wherever we hash JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def run_id(evidence_id: str, pipeline: Pipeline, params: Mapping[str, Any], nonce: str | None) -> str:
    """Deterministic: the same evidence, pipeline version, parameters and nonce give the same run.

    That is what makes a redelivered job a no-op; ``--new-run`` supplies a nonce.
    """
    key = canonical_json(
        {"evidence_id": evidence_id, "pipeline": pipeline.name, "version": pipeline.version,
         "params": dict(params), "nonce": nonce}
    )
    return f"{pipeline.name}-v{pipeline.version}-{hashlib.sha256(key).hexdigest()[:16]}"
