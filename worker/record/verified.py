"""What is shown is verified: run records and outputs are checked before anything from them is used.

A run.json must hash to what its "run committed" custody event recorded;
an output must hash to what its run.json recorded; intake facts must agree
with the "ingested" event. What fails a check is reported, and nothing
from it is printed, exported or signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.errors import IntegrityError
from worker.record import custody
from worker.record.store import EvidenceStore


@dataclass
class Runs:
    records: list[dict[str, Any]] = field(default_factory=list)   # verified run.json records, oldest first
    problems: dict[str, str] = field(default_factory=dict)        # run id -> why nothing from it is shown


def _committed_events(chain: custody.ChainReport) -> dict[str, Mapping[str, Any]]:
    events = {}
    for event in chain.events:
        details = event.get("details")
        if event.get("event") == custody.RUN_COMMITTED and isinstance(details, dict):
            events.setdefault(str(details.get("run_id")), details)
    return events


def committed_run_ids(chain: custody.ChainReport) -> set[str]:
    return set(_committed_events(chain))


def runs(store: EvidenceStore, evidence_id: str, chain: custody.ChainReport) -> Runs:
    """Every committed run whose run.json is what custody says was committed."""
    logged = _committed_events(chain)
    found = Runs()
    for stored in store.run_records(evidence_id):
        rid = str(stored.record.get("run_id"))
        event = logged.get(rid)
        if event is None:
            found.problems[rid] = "its run.json has no 'run committed' event in the custody log"
        elif "record_sha256" in event and event["record_sha256"] != stored.sha256:
            found.problems[rid] = "its run.json does not match the SHA-256 logged when it was committed (altered)"
        elif "record_sha256" not in event and event.get("outputs") != stored.record.get("outputs"):
            found.problems[rid] = "its run.json lists outputs other than those logged when it was committed"
        else:
            found.records.append(stored.record)
    return found


def output(store: EvidenceStore, evidence_id: str, record: Mapping[str, Any], name: str) -> bytes:
    """An output of a verified run, checked against the SHA-256 its run.json records; IntegrityError if not."""
    expected = (record.get("outputs") or {}).get(name) or {}
    data = store.read_output(evidence_id, str(record.get("run_id")), name)
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise IntegrityError(
            f"{name} of run {record.get('run_id')} no longer matches the SHA-256 its run.json records: it was "
            "altered on disk, and nothing from it is shown; run 'evidence audit'"
        )
    return data


def intake_problems(record: Mapping[str, Any], chain: custody.ChainReport) -> list[str]:
    """Where evidence.json disagrees with what the "ingested" custody event logged when it was written."""
    ingested = next((e.get("details") for e in chain.events if e.get("event") == custody.INGESTED), None)
    if not isinstance(ingested, dict):
        lost = any(e.get("event") == custody.CUSTODY_ACKNOWLEDGED and (e.get("details") or {}).get("log_missing")
                   for e in chain.events)
        return [] if lost else ["custody: there is no 'ingested' event"]
    return [f"evidence.json: {key!r} differs from what the 'ingested' custody event recorded"
            for key, logged in ingested.items() if key != "recovered" and record.get(key) != logged]
