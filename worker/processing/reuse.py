"""Finished work reused: a step whose inputs are exactly those of the same step in an earlier committed
run of the same item is not run again; its outputs are copied from that run, their hashes re-verified.

The inputs are the item, the step's name and code version, its own
parameters, its fingerprint (the hashes of the model files it would load)
and the earlier facts it reads, all hashed into one key that run.json keeps
per step. ``--new-run`` (a nonce) computes every step afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.pipeline import Step, StepContext, StepResult, canonical_json
from worker.record import verified
from worker.record.store import EvidenceStore


def input_key(step: Step, context: StepContext) -> str:
    read = {}
    for path in step.reads:  # "probe.has_audio": one fact of an earlier step
        name, _, key = path.partition(".")
        read[path] = (context.facts.get(name) or {}).get(key)
    material = {"evidence_id": context.evidence_id, "step": step.name, "version": step.version,
                "params": dict(context.params), "reads": read,
                "fingerprint": step.fingerprint(context) if step.fingerprint else None}
    return hashlib.sha256(canonical_json(material)).hexdigest()


def finished(store: EvidenceStore, evidence_id: str) -> list[dict]:
    """The item's committed runs, verified against custody: read once per job, asked once per step."""
    return list(verified.runs(store, evidence_id, store.custody(evidence_id)).records)


def earlier(records: Sequence[Mapping[str, Any]], step: str, key: str,
            redone: Collection[str] = ()) -> tuple[dict, dict] | None:
    """(run record, its step entry) of the newest of the verified ``records`` whose ``step`` had this input key.

    An output a later step replaced (the masked video, stored signed) is stored only as that step made it.
    It is reused only where that later step is in ``redone`` (steps this run will run again, or reuse by
    their own key): the signing step then signs the reused video afresh for this run, so the slowest step,
    masking, is not run again for a change elsewhere. Signing covers the video's content, not the earlier
    manifest, which the new one replaces.
    """
    for record in reversed(records):
        entries = record.get("steps") or []
        for index, entry in enumerate(entries):
            if entry.get("name") == step and entry.get("input_key") == key:
                outputs = set(entry.get("outputs") or [])
                replacers = {str(other.get("name")) for other in entries[index + 1:]
                             if outputs & set(other.get("outputs") or [])}
                if replacers <= set(redone):
                    return dict(record), dict(entry)
    return None


def reuse(store: EvidenceStore, evidence_id: str, record: Mapping[str, Any], entry: Mapping[str, Any],
          folder: Path) -> StepResult:
    """The step's result as that earlier run recorded it, its files copied into ``folder`` and re-verified."""
    files = {}
    for name in entry.get("outputs") or []:
        expected = (record.get("outputs") or {}).get(name) or {}
        files[name] = store.fetch_output(evidence_id, str(record["run_id"]), name, folder / name,
                                         expected_sha256=str(expected.get("sha256")))
    step = str(entry["name"])
    return StepResult(files=files, facts=(record.get("facts") or {}).get(step) or {},
                      models=(record.get("models") or {}).get(step) or {})
