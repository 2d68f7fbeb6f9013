"""The pipelines a worker can run, by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipelines.intake import INTAKE
from pipelines.pipeline import ParameterError, Pipeline

_PIPELINES: dict[str, Pipeline] = {INTAKE.name: INTAKE}
# The worker's own job kinds (worker.jobs.queue.JobKind) travel in the same field as a pipeline's name.
_TAKEN_BY_THE_WORKER = frozenset({"replicate", "upload"})


class UnknownPipeline(KeyError):
    def __str__(self) -> str:
        return f"no pipeline named {self.args[0]!r} (known: {', '.join(sorted(_PIPELINES))})"


def register(pipeline: Pipeline) -> None:
    """Add a pipeline (a plug-in, or a test's); a name cannot be taken twice."""
    if pipeline.name in _TAKEN_BY_THE_WORKER:
        raise ValueError(f"{pipeline.name!r} names a worker's own jobs; a pipeline cannot take it")
    existing = _PIPELINES.get(pipeline.name)
    if existing is not None and existing is not pipeline:
        raise ValueError(f"a pipeline named {pipeline.name!r} is already registered")
    _PIPELINES[pipeline.name] = pipeline


def get(name: str) -> Pipeline:
    try:
        return _PIPELINES[name]
    except KeyError:
        raise UnknownPipeline(name) from None


def configure(defaults: Mapping[str, Any]) -> None:
    """Make the settings' values (``{"transcribe.beam_size": 3}``) the defaults of every pipeline with that
    parameter; ParameterError for a key no pipeline has, or a value it cannot take."""
    unknown = set(defaults)
    for name, pipeline in list(_PIPELINES.items()):
        params = dict(pipeline.params)
        for key, value in defaults.items():
            if key in params:
                param = params[key]
                params[key] = dataclasses.replace(param, default=param.coerce(key, value))
                unknown.discard(key)
        _PIPELINES[name] = dataclasses.replace(pipeline, params=params)
    if unknown:
        raise ParameterError(f"no pipeline has the parameter {', '.join(sorted(map(repr, unknown)))}")
