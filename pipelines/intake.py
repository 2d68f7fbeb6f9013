"""The default pipeline every upload goes through.

Bump the version whenever the steps or their defaults change, so new runs
get new run ids. Steps are declared by their specs; their code (and the
media libraries it needs) is imported when a run first calls it.
"""

from pipelines import probe
from pipelines.pipeline import Pipeline, Step, deferred
from pipelines.provenance import spec as sign
from pipelines.redact import spec as redact
from pipelines.transcribe import spec as transcribe

INTAKE = Pipeline(
    name="intake",
    version="7",
    steps=(
        Step("probe", probe.run, version="2"),
        Step("transcribe", deferred("pipelines.transcribe.step", "run"), version=transcribe.VERSION,
             reads=("probe.has_audio", "probe.duration_s"),
             fingerprint=deferred("pipelines.transcribe.step", "fingerprint"), models=transcribe.model_names),
        Step("redact", deferred("pipelines.redact.step", "run"), version=redact.VERSION,
             reads=("probe.has_video", "probe.video"), fingerprint=deferred("pipelines.redact.step", "fingerprint"),
             models=redact.model_names, needs=redact.needs),
        Step("sign", deferred("pipelines.provenance.step", "run"), version=sign.VERSION,
             reads=("redact.tracks_masked",), fingerprint=sign.fingerprint, replaces=("redacted.mp4",),
             needs=sign.needs),
    ),
    params={
        **{f"probe.{key}": param for key, param in probe.PARAMS.items()},
        **{f"transcribe.{key}": param for key, param in transcribe.PARAMS.items()},
        **{f"redact.{key}": param for key, param in redact.PARAMS.items()},
    },
)
