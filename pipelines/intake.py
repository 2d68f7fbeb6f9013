"""The default pipeline every upload goes through.

Later steps (transcribe, redact, sign) join here; bump the version whenever
the steps or their defaults change, so new runs get new run ids.
"""

from pipelines import probe
from pipelines.pipeline import Pipeline, Step

INTAKE = Pipeline(
    name="intake",
    version="2",
    steps=(Step("probe", probe.run),),
    params={f"probe.{key}": param for key, param in probe.PARAMS.items()},
)
