"""The default pipeline every upload goes through.

Bump the version whenever the steps or their defaults change, so new runs
get new run ids.
"""

from pipelines import probe
from pipelines.pipeline import Pipeline, Step
from pipelines.redact import step as redact
from pipelines.transcribe import step as transcribe

INTAKE = Pipeline(
    name="intake",
    version="4",
    steps=(
        Step("probe", probe.run),
        Step("transcribe", transcribe.run, version=transcribe.VERSION, reads=("probe.has_audio",),
             fingerprint=transcribe.fingerprint),
        Step("redact", redact.run, version=redact.VERSION, reads=("probe.has_video", "probe.video"),
             fingerprint=redact.fingerprint),
    ),
    params={
        **{f"probe.{key}": param for key, param in probe.PARAMS.items()},
        **{f"transcribe.{key}": param for key, param in transcribe.PARAMS.items()},
        **{f"redact.{key}": param for key, param in redact.PARAMS.items()},
    },
)
