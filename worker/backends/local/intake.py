"""An intake as one unit: the record, the original and the "ingested" event, all three or none.

The unit runs under the item's lock. Its marker (``intake.pending``, written
first and removed last) is the only thing that lets a later process finish
or roll back what a killed one left; without it, a missing record or a
missing custody log is damage for a person to see, never quietly rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from worker.backends.layout import ORIGINAL, RECORD, record_context
from worker.backends.local.custody_file import CustodyFile
from worker.encryption.sealing import Sealing
from worker.errors import IntegrityError
from worker.fs.directory import Directory
from worker.record import custody
from worker.record.store import json_bytes
from worker.record.timestamps import utc_now

_INTAKE_MARKER = "intake.pending"


def original_name(item: Directory) -> str | None:
    if not item.is_dir(ORIGINAL):
        return None
    with item.child(ORIGINAL) as folder:
        names = folder.names()
    return names[0] if names else None


def store_intake(item: Directory, incoming: Directory, tmp: str, name: str, digest: str, size: int,
                 intake: Mapping[str, Any], actor: str, sealing: Sealing) -> None:
    """evidence.json, the original, the "ingested" event: all three, or none of them.

    The marker written first says an intake is under way; only a marker
    lets a later process finish or roll back what a killed one left
    (``complete_intake``), so a record or a log deleted later is never
    quietly rebuilt.
    """
    record = {**intake, "evidence_id": digest, "sha256": digest, "size": size,
              "stored_as": f"{ORIGINAL}/{name}", "ingested_at": utc_now(), "ingested_by": actor}
    done: list[str] = []  # only what this call made: nothing that was there before is ever rolled back
    try:
        # The marker says only that an intake is under way; what it is about is in the sealed record.
        if not item.write_once(_INTAKE_MARKER, b"", mode=0o600):
            raise IntegrityError(f"another intake of {digest} is marked as under way; run a worker to finish it")
        done.append(_INTAKE_MARKER)
        if not item.write_once(RECORD, sealing.seal_bytes(json_bytes(record), record_context(digest))):
            raise IntegrityError(f"evidence {digest} already has an intake record but no original; a person must look")
        done.append(RECORD)
        if item.exists(ORIGINAL):
            raise IntegrityError(f"evidence {digest} has an original folder but no original; a person must look")
        with item.child(ORIGINAL, create=True) as folder:
            done.append(ORIGINAL)
            incoming.link(tmp, folder, name)  # never replaces: FileExistsError if anything is there
            folder.fsync()
            os.fchmod(folder.fd, 0o500)
        item.fsync()
        CustodyFile(item, digest, sealing).append(custody.INGESTED, actor,
                                                  {"sha256": digest, "size": size, **intake}, recover=True)
    except BaseException:
        _roll_back(item, done)
        raise
    item.unlink(_INTAKE_MARKER)

def _roll_back(item: Directory, done: list[str]) -> None:
    """Undo an intake that could not finish: no original without its record and its event."""
    if ORIGINAL in done:
        item.remove_tree(ORIGINAL)
    if RECORD in done:
        item.unlink(RECORD, missing_ok=True)
    item.unlink(_INTAKE_MARKER, missing_ok=True)

def read_record(item: Directory, digest: str, sealing: Sealing) -> dict[str, Any]:
    return json.loads(sealing.open_bytes(item.read_bytes(RECORD), record_context(digest)))


def complete_intake(item: Directory, digest: str, actor: str, sealing: Sealing) -> str | None:
    """Finish or roll back an intake a killed process left half-done (its marker says so); what was done."""
    log_file = CustodyFile(item, digest, sealing)
    repaired = log_file.recover(actor)
    if not item.exists(_INTAKE_MARKER):
        return "closed an interrupted custody write" if repaired else None
    chain = custody.verify_chain(log_file.read(), digest)
    if any(event.get("event") == custody.INGESTED for event in chain.events):
        item.unlink(_INTAKE_MARKER)  # it finished; only the marker's removal was cut off
        return "closed an interrupted custody write" if repaired else None
    if item.exists(RECORD) and original_name(item) is not None:
        record = read_record(item, digest, sealing)
        logged = {key: value for key, value in record.items()
                  if key not in ("evidence_id", "stored_as", "ingested_at", "ingested_by")}
        log_file.append(custody.INGESTED, actor, {**logged, "recovered": "the storing process stopped before "
                                                  "logging the intake"}, recover=True)
        item.unlink(_INTAKE_MARKER)
        return "completed an intake that stopped before it was logged"
    _roll_back(item, [ORIGINAL, RECORD])  # the original never arrived: that intake did not happen
    return "rolled back an intake that stopped before its original was stored"
