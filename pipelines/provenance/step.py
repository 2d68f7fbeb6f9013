"""The sign step: the run's masked video gets an embedded, signed C2PA manifest; only the signed file is kept.

The manifest names the preserved original as its parent ingredient (title
and format only, no picture), says what was done (opened, faces masked,
transcoded) and by which software, and carries our own assertion: the
evidence id, the original's SHA-256 and size, the run and pipeline, and the
SHA-256 of every other output of the run, which binds them to the video.
"""

from __future__ import annotations

import importlib.metadata

from models.registry import file_sha256
from pipelines.errors import StepError
from pipelines.pipeline import StepContext, StepResult
from pipelines.provenance import manifest

SOFTWARE = {"name": "evidence-worker", "version": importlib.metadata.version("evidence-worker")}
_MIME = {"mp4/mov/3gp/m4a": "video/mp4", "matroska/webm": "video/x-matroska", "avi": "video/x-msvideo",
         "mpeg-ts (mts/m2ts)": "video/mp2t", "ogg": "video/ogg"}


class NoCredentials(StepError):
    retryable = False


def run(ctx: StepContext) -> StepResult:
    video = ctx.outputs.get("redacted.mp4")
    if video is None:
        return StepResult(facts={"skipped": "no video derivative to sign"})
    if ctx.signing is None:
        raise NoCredentials("the sign step has no signing credentials ([signing] settings)")
    redaction = ctx.facts.get("redact") or {}
    probe = ctx.facts.get("probe") or {}
    actions = [
        {"action": "c2pa.edited", "description": f"faces masked: policy {redaction.get('policy')}, "
                                                 f"{redaction.get('tracks_masked')} face tracks, solid masks",
         "parameters": {"policy": str(redaction.get("policy")), "tracks": str(redaction.get("tracks_masked"))}},
        {"action": "c2pa.transcoded", "description": "H.264 in MP4, the original's timestamps, metadata removed"},
    ]
    evidence = {
        "evidence_id": ctx.evidence_id, "original_sha256": ctx.evidence_id,
        "original_size": str(ctx.original.stat().st_size), "run_id": ctx.run_id, "pipeline": ctx.pipeline,
        "outputs": {name: file_sha256(path) for name, path in sorted(ctx.outputs.items()) if name != "redacted.mp4"},
        # Which models heard and saw the footage, down to their files' SHA-256: a court can ask.
        "models": {f"{step}.{role}": {"name": m.get("name"), "kind": m.get("kind"), "files": m.get("files") or {}}
                   for step, used in sorted(ctx.models_used.items()) for role, m in sorted(used.items())},
        "signed_with_test_ca": ctx.signing.test,
    }
    signed = ctx.workdir / "redacted.mp4"
    original = manifest.parent_ingredient(f"original {ctx.evidence_id[:12]}", _MIME.get(probe.get("container")))
    manifest.sign(video, signed, manifest.manifest("redacted.mp4", SOFTWARE, actions, evidence, original), ctx.signing)
    facts = {"signed": "redacted.mp4", "signer": ctx.signing.signer_name, "test_ca": ctx.signing.test,
             "algorithm": ctx.signing.algorithm}
    warnings = ["signed with a TEST CA, not for production: configure [signing]"] if ctx.signing.test else []
    return StepResult(files={"redacted.mp4": signed}, facts=facts, warnings=warnings,
                      tools={"c2pa-python": importlib.metadata.version("c2pa-python")})
