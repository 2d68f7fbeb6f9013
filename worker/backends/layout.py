"""The store's names, shared by every backend: the folders (local) or key prefixes (S3) of an item, and the
contexts that bind sealed objects to their place. A local store and an S3 bucket hold the same layout, so a
replica copies one into the other as it is.

    <item>/evidence.json          the intake record
    <item>/original/<name>        the original (``original.sealed`` with a master key)
    <item>/custody                the custody log (local: one file; S3: one object per event)
    <item>/stamps/<event>.json    time-stamps of the log's head, beside it (worker.record.stamps)
    <item>/runs/<run>/run.json    written last: it commits the run
    <item>/item.id                sealed: which evidence id a keyed item name holds
    signing/<role>-<sha>.pem      the signing set a restored home needs (worker.processing.signing)
"""

from __future__ import annotations

from worker.encryption.sealing import context

RECORD = "evidence.json"
ORIGINAL = "original"
SEALED_ORIGINAL = "original.sealed"
CUSTODY = "custody"
STAMPS = "stamps"
SIGNING = "signing"
RUNS = "runs"
ITEM_ID = "item.id"
ORIGINAL_CONTEXT = context(ORIGINAL)   # the evidence id is not known until the last byte; the hash binds it


def record_context(evidence_id: str) -> bytes:
    return context(evidence_id, RECORD)


def stamp_context(evidence_id: str, name: str) -> bytes:
    return context(evidence_id, STAMPS, name)


def signing_context(name: str) -> bytes:
    return context(SIGNING, name)
