"""What a pipeline is: a name, a version and ordered steps that are plain functions.

A step gets local files and a folder to write in; it knows nothing about
stores, queues or custody. It returns the files it made and the facts it
found. The runner does everything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Tools:
    """Where the media tools are and how long one call may take."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    timeout_s: float = 600.0


DEFAULT_TOOLS = Tools()


@dataclass(frozen=True)
class StepContext:
    evidence_id: str
    original: Path                      # a verified local copy; steps only read it
    workdir: Path                       # where this step writes its outputs
    params: Mapping[str, Any]           # this step's parameters ("probe.x" arrives as "x")
    facts: Mapping[str, Mapping[str, Any]]  # what earlier steps found, by step name
    tools: Tools = DEFAULT_TOOLS


@dataclass(frozen=True)
class StepResult:
    files: Mapping[str, Path] = field(default_factory=dict)   # output name -> file in workdir
    facts: Mapping[str, Any] = field(default_factory=dict)    # goes into run.json: nothing restricted
    warnings: Sequence[str] = ()
    tools: Mapping[str, str] = field(default_factory=dict)    # tool -> version used


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[StepContext], StepResult]


class ParameterError(ValueError):
    """A parameter that the pipeline does not have, or a value of the wrong kind."""


def _coerce(key: str, value: Any, default: Any) -> Any:
    kind = type(default)
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
    defaults: Mapping[str, Any] = field(default_factory=dict)  # "step.param" -> default value

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults with ``overrides`` applied, each checked against the default's type."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ParameterError(
                f"pipeline {self.name!r} has no parameter {', '.join(map(repr, unknown))} (it has: {known})"
            )
        params = dict(self.defaults)
        for key, value in overrides.items():
            params[key] = _coerce(key, value, self.defaults[key])
        return params

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Only what differs from the defaults, in its proper type: one spelling per run."""
        resolved = self.resolve_params(params)
        return {key: value for key, value in resolved.items() if value != self.defaults[key]}

    def step_params(self, step: Step, params: Mapping[str, Any]) -> dict[str, Any]:
        prefix = step.name + "."
        return {key[len(prefix):]: value for key, value in params.items() if key.startswith(prefix)}


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8. Used wherever we hash JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def run_id(evidence_id: str, pipeline: Pipeline, params: Mapping[str, Any], nonce: str | None) -> str:
    """Deterministic: the same evidence, pipeline version, parameters and nonce give the same run.

    That is what makes a redelivered job a no-op; ``--new-run`` supplies a nonce.
    """
    key = canonical_json(
        {"evidence_id": evidence_id, "pipeline": pipeline.name, "version": pipeline.version,
         "params": dict(params), "nonce": nonce}
    )
    return f"{pipeline.name}-v{pipeline.version}-{hashlib.sha256(key).hexdigest()[:16]}"
