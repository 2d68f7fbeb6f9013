"""One item's custody log as a report: every event, verified, with the original it is about."""

from __future__ import annotations

from typing import Any

from worker import __version__
from worker.record.store import EvidenceStore
from worker.record.timestamps import utc_now

_SHOWN = ("seq", "ts", "event", "actor", "details", "prev", "hash")


def custody_report(store: EvidenceStore, evidence_id: str) -> dict[str, Any]:
    record = store.evidence(evidence_id)
    chain = store.custody(evidence_id)
    return {
        "evidence_id": evidence_id,
        "made_at": utc_now(),
        "software": f"evidence-worker {__version__}",
        "original": {key: record.get(key) for key in ("sha256", "size", "ingested_at", "case")},
        "chain_ok": chain.ok, "problems": list(chain.problems), "repairs": list(chain.repairs),
        "count": chain.count, "head": chain.head,
        "events": [{key: event.get(key) for key in _SHOWN} for event in chain.events],
    }
