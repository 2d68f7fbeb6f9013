"""One item's custody log as a report: every event, verified, with the original it is about."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker import __version__
from worker.record import stamps
from worker.record.store import EvidenceStore
from worker.record.timestamps import utc_now

_SHOWN = ("seq", "ts", "event", "actor", "details", "prev", "hash")


def custody_report(store: EvidenceStore, evidence_id: str, stamp_roots: Sequence[Any] = ()) -> dict[str, Any]:
    """The report; ``stamp_roots``: the time-stamp authority's roots, which the kept stamps must chain to.
    A log that no longer holds a stamped head (cut back, written again) does not verify."""
    record = store.evidence(evidence_id)
    chain = store.custody(evidence_id)
    kept = store.custody_stamps(evidence_id)
    problems = list(chain.problems) + stamps.problems(kept, chain, evidence_id, stamp_roots)
    return {
        "evidence_id": evidence_id,
        "made_at": utc_now(),
        "software": f"evidence-worker {__version__}",
        "original": {key: record.get(key) for key in ("sha256", "size", "ingested_at", "case")},
        "chain_ok": not problems, "problems": problems, "repairs": list(chain.repairs),
        "count": chain.count, "head": chain.head,
        "events": [{key: event.get(key) for key in _SHOWN} for event in chain.events],
        # Each with its RFC 3161 token (base64 DER): 'openssl ts -verify' checks it without this software.
        "stamps": [{key: stamp.get(key) for key in ("seq", "hash", "time", "authority", "token")}
                   for stamp in kept if "damaged" not in stamp],
        "stamps_checked_against_roots": bool(stamp_roots),
    }
