"""The default pipeline every upload goes through.

Bump the version whenever the steps or their defaults change, so new runs
get new run ids.
"""

from pipelines import probe
from pipelines.pipeline import Pipeline, Step
from pipelines.provenance import step as sign
from pipelines.redact import step as redact
from pipelines.transcribe import step as transcribe

INTAKE = Pipeline(
    name="intake",
    version="7",
    steps=(
        Step("probe", probe.run, version="2"),
        Step("transcribe", transcribe.run, version=transcribe.VERSION,
             reads=("probe.has_audio", "probe.duration_s"), fingerprint=transcribe.fingerprint,
             models=transcribe.model_names),
        Step("redact", redact.run, version=redact.VERSION, reads=("probe.has_video", "probe.video"),
             fingerprint=redact.fingerprint, models=redact.model_names, needs=redact.needs),
        Step("sign", sign.run, version=sign.VERSION, reads=("redact.tracks_masked",), fingerprint=sign.fingerprint,
             replaces=("redacted.mp4",), needs=lambda _params: frozenset({"signing"})),
    ),
    params={
        **{f"probe.{key}": param for key, param in probe.PARAMS.items()},
        **{f"transcribe.{key}": param for key, param in transcribe.PARAMS.items()},
        **{f"redact.{key}": param for key, param in redact.PARAMS.items()},
    },
)
