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
from worker.record.timestamps import utc_now

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
CUSTODY_REPAIRED = "custody repaired"
CUSTODY_ACKNOWLEDGED = "custody damage acknowledged"
INCOMPLETE_UPLOAD = "incomplete upload"
JOB_REQUEUED = "job requeued"
EXPORTED = "exported"
UNREDACTED_EXPORT_AUTHORISED = "unredacted export authorised"
EXPORT_FAILED = "export failed"
REPLICATED = "replicated"
RESTORED = "restored from replica"


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
    repairs: list[str] = field(default_factory=list)   # torn events ended by a logged repair
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def split_lines(data: bytes) -> tuple[list[bytes], bytes | None]:
    """(the complete lines, the bytes after the last newline if a write was cut short)."""
    *complete, tail = data.split(b"\n")
    return complete, tail or None


def parse(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def damage(raw: bytes, line: int) -> dict[str, Any]:
    """How a damaged line is identified in the event that closes it."""
    return {"damaged_line": line, "damaged_length": len(raw), "damaged_bytes_sha256": hashlib.sha256(raw).hexdigest()}


def verify_chain(data: bytes, evidence_id: str) -> ChainReport:
    """Check every event of one item's log (the whole file's bytes)."""
    report = ChainReport()
    if data and not data.endswith(b"\n"):
        report.problems.append("the last event is incomplete (torn write or truncation)")
    complete, torn = split_lines(data)
    lines: Sequence[bytes] = complete + ([torn] if torn else [])
    expected_prev: str | None = GENESIS
    expected_seq: int | None = 0
    for number, raw in enumerate(lines, start=1):
        event = parse(raw)
        if event is None:
            closed = _closing_note(raw, number, parse(lines[number]) if number < len(lines) else None)
            if closed is not None:
                report.repairs.append(closed)
            else:
                report.problems.append(f"line {number} is not a valid event (edited or damaged)")
                expected_prev = expected_seq = None
            continue
        report.events.append(event)
        details = event.get("details") if isinstance(event.get("details"), dict) else {}
        if event.get("event") == CUSTODY_REPAIRED and details.get("interrupted_write"):
            report.repairs.append(f"line {number}: an interrupted write of this software was removed and logged")
        if event.get("event") == CUSTODY_ACKNOWLEDGED and details.get("log_missing"):
            report.repairs.append(f"the custody log before line {number} was lost; {event.get('actor')} "
                                  f"acknowledged it at {event.get('ts')}: {details.get('reason')}")
        if event.get("hash") != _event_hash(event):
            report.problems.append(f"line {number} was altered: its hash does not match its content")
        if expected_prev is not None and event.get("prev") != expected_prev:
            report.problems.append(
                f"line {number} does not follow the event before it (an event was deleted, inserted or reordered)"
            )
        if expected_seq is not None and event.get("seq") != expected_seq:
            report.problems.append(f"line {number} has sequence number {event.get('seq')!r}, expected {expected_seq}")
        if event.get("evidence_id") != evidence_id:
            report.problems.append(f"line {number} belongs to another evidence item")
        expected_prev = event.get("hash")
        expected_seq = event["seq"] + 1 if isinstance(event.get("seq"), int) else None
    report.count = len(report.events)
    if report.events:
        report.head = report.events[-1].get("hash", GENESIS)
    return report


def _closing_note(raw: bytes, number: int, following: Mapping[str, Any] | None) -> str | None:
    """How the event after a damaged line closed it (repaired or acknowledged), or None if nothing did."""
    if following is None:
        return None
    details = following.get("details")
    if not isinstance(details, dict) or any(details.get(key) != value for key, value in damage(raw, number).items()):
        return None
    if following.get("event") == CUSTODY_REPAIRED:
        return f"line {number} was cut short (torn write) and the repair is logged"
    if following.get("event") == CUSTODY_ACKNOWLEDGED:
        return (f"line {number} is damaged; {following.get('actor')} acknowledged it at {following.get('ts')}:"
                f" {details.get('reason')}")
    return None


def last_intact(complete: Sequence[bytes]) -> dict[str, Any] | None:
    """The event to chain the next one to: the last complete line, which must be intact.

    Any damage there is tampering and raises ValueError, so nothing is
    appended to a chain that cannot be trusted.
    """
    if not complete:
        return None
    event = parse(complete[-1])
    if event is None or event.get("hash") != _event_hash(event):
        raise ValueError("its last complete event was altered or damaged")
    return event
