"""Which runs may leave the building: a masked video is released only from a run whose masking is at least
as strict as the configured floor ([release]), whose own leak check found no face showing, and that custody
asked for.

A run made with weaker settings (a higher detection threshold, masks drawn
tighter, the `none` policy), whether by a careless reprocess or a job
written straight into the queue, stays in the store as evidence of what was
done, but `export` will not cut a clip from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.config import ReleaseSettings
from worker.jobs.submit import unrequested_runs
from worker.record import custody


def problems(run: Mapping[str, Any], chain: custody.ChainReport, floor: ReleaseSettings) -> list[str]:
    """Why ``run``'s masked video may not be released; empty when it may."""
    params = run.get("params") or {}
    found = []
    policy = params.get("redact.policy")
    if policy not in floor.policies:
        found.append(f"masking policy {policy!r} is not one of [release] policies {list(floor.policies)}")
    for key, limit, stricter in (("redact.min_score", floor.max_min_score, "at most"),
                                 ("redact.detect_scale", floor.min_detect_scale, "at least"),
                                 ("redact.mask_scale", floor.min_mask_scale, "at least"),
                                 ("redact.pad_frames", floor.min_pad_frames, "at least")):
        value = params.get(key)
        weaker = value is None or (value > limit if stricter == "at most" else value < limit)
        if weaker:
            found.append(f"{key} = {value} where [release] asks for {stricter} {limit}")
    leak_check = (((run.get("facts") or {}).get("redact") or {}).get("leak_check")) or {}
    if not leak_check:
        found.append("its masked video had no leak check (made before redact step 3)")
    elif not leak_check.get("passed"):
        found.append(f"its leak check found {leak_check.get('faces_found')} face(s) showing after masking "
                     "(see the run's redaction-report.json)")
    committed = {str((e.get("details") or {}).get("run_id")) for e in chain.events
                 if e.get("event") == custody.RUN_COMMITTED}
    if run["run_id"] not in committed or run["run_id"] in unrequested_runs(chain):
        found.append("no request in custody asked for the job that made it")
    return found
