"""The pipelines a worker can run, by name."""

from __future__ import annotations

from pipelines.intake import INTAKE
from pipelines.pipeline import Pipeline

_PIPELINES: dict[str, Pipeline] = {INTAKE.name: INTAKE}


class UnknownPipeline(KeyError):
    def __str__(self) -> str:
        return f"no pipeline named {self.args[0]!r} (known: {', '.join(sorted(_PIPELINES))})"


def register(pipeline: Pipeline) -> None:
    """Add a pipeline (a plug-in, or a test's); a name cannot be taken twice."""
    existing = _PIPELINES.get(pipeline.name)
    if existing is not None and existing is not pipeline:
        raise ValueError(f"a pipeline named {pipeline.name!r} is already registered")
    _PIPELINES[pipeline.name] = pipeline


def get(name: str) -> Pipeline:
    try:
        return _PIPELINES[name]
    except KeyError:
        raise UnknownPipeline(name) from None
