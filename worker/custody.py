"""Chain of custody: append-only events, each carrying the hash of the one before.

An event is one line of canonical JSON. Its ``hash`` is the SHA-256 of the
event without that field, and its ``prev`` is the previous event's hash (64
zeros for the first), so editing, deleting, inserting or reordering any event
breaks the chain at that point. Cutting events off the end leaves a valid
but shorter chain; run records keep the hash of their "run started" event so
an audit notices when those go missing.

Storage is the store's business (a file per item locally); this module only
makes and checks events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.pipeline import canonical_json
from worker import __version__
from worker.timestamps import utc_now

GENESIS = "0" * 64

INGESTED = "ingested"
DUPLICATE_UPLOAD = "duplicate upload"
JOB_ENQUEUED = "job enqueued"
RUN_STARTED = "run started"
RUN_COMMITTED = "run committed"
RUN_FAILED = "run failed"
RUN_INTERRUPTED = "run interrupted"
REPROCESS_REQUESTED = "reprocess requested"
AUDIT_RESULT = "audit result"
RESTRICTED_VIEWED = "restricted facts viewed"


def _event_hash(event: Mapping[str, Any]) -> str:
    body = {key: value for key, value in event.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def new_event(
    previous: Mapping[str, Any] | None,
    *,
    event: str,
    evidence_id: str,
    actor: str,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """The event that follows ``previous`` (None for the first event of an item)."""
    body = {
        "seq": 0 if previous is None else previous["seq"] + 1,
        "ts": utc_now(),
        "event": event,
        "evidence_id": evidence_id,
        "actor": actor,
        "software": f"evidence-worker/{__version__}",
        "details": dict(details),
        "prev": GENESIS if previous is None else previous["hash"],
    }
    body["hash"] = _event_hash(body)
    return body


def encode(event: Mapping[str, Any]) -> bytes:
    return canonical_json(event) + b"\n"


@dataclass
class ChainReport:
    count: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(data: bytes, evidence_id: str) -> ChainReport:
    """Check every event of one item's log (the whole file's bytes)."""
    report = ChainReport()
    if data and not data.endswith(b"\n"):
        report.problems.append("the last event is incomplete (torn write or truncation)")
    lines: Sequence[bytes] = data.splitlines()
    expected_prev = GENESIS
    for number, raw in enumerate(lines, start=1):
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            report.problems.append(f"line {number} is not a valid event (edited or damaged)")
            expected_prev = None
            continue
        report.events.append(event)
        if event.get("hash") != _event_hash(event):
            report.problems.append(f"line {number} was altered: its hash does not match its content")
        if expected_prev is not None and event.get("prev") != expected_prev:
            report.problems.append(
                f"line {number} does not follow the event before it (an event was deleted, inserted or reordered)"
            )
        if event.get("seq") != number - 1:
            report.problems.append(f"line {number} has sequence number {event.get('seq')!r}, expected {number - 1}")
        if event.get("evidence_id") != evidence_id:
            report.problems.append(f"line {number} belongs to another evidence item")
        expected_prev = event.get("hash")
    report.count = len(lines)
    if report.events:
        report.head = report.events[-1].get("hash", GENESIS)
    return report


def last_event(data: bytes) -> dict[str, Any] | None:
    """The event to chain the next one to; CustodyError-worthy damage is reported as ValueError."""
    if not data:
        return None
    if not data.endswith(b"\n"):
        raise ValueError("the custody log ends in an incomplete event")
    event = json.loads(data.splitlines()[-1])
    if event.get("hash") != _event_hash(event):
        raise ValueError("the last custody event does not match its hash")
    return event
