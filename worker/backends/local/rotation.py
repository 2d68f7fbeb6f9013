"""Master-key rotation over a local store: every sealed object's data key re-wrapped, content untouched.

Only each object's header changes (its first bytes, rewritten in place:
one sector, so a power cut leaves the old header or the new one); custody
logs, whose every line is sealed on its own, are rewritten whole and
renamed into place. An object already under the new key is skipped, so an
interrupted rotation is finished by running it again with the same keys.
The keyrings go last: until then every store still opens with the old key.
Each store is held exclusively, so a running worker makes it refuse.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from worker.backends.layout import (
    ITEM_ID,
    ORIGINAL,
    ORIGINAL_CONTEXT,
    RECORD,
    SIGNING,
    STAMPS,
    record_context,
    signing_context,
    stamp_context,
)
from worker.backends.local.custody_file import LOG, CustodyFile
from worker.backends.local.store import LocalStore
from worker.encryption import envelope
from worker.encryption.envelope import MasterKey
from worker.encryption.sealing import KEYRING, KEYRING_CONTEXT, context, rewrap_line, rewrapped
from worker.errors import ConfigError, IntegrityError
from worker.fs.directory import Directory


def rotate(roots: Sequence[Path], old: MasterKey, new: MasterKey) -> dict[Path, int]:
    """Re-wrap every object of the local stores at ``roots`` from ``old`` to ``new``; how many, per store.

    Each store is held exclusively (a running worker makes this refuse).
    First every object of every store is checked (nothing is written if one
    is under neither key or damaged), then re-wrapped, and the keyrings go
    last, across all stores: a store whose keyring is under ``new`` is done.
    """
    stores = []
    try:
        for root in roots:
            try:
                stores.append(LocalStore(root, key=old, exclusive=True))
            except ConfigError:
                LocalStore(root, key=new, exclusive=True).close()   # finished by an earlier run, else this raises
        for write in (False, True):
            changed = {store.root: _items(store, old, new, write) + _signing_set(store, old, new, write)
                       for store in stores}
        for store in stores:
            changed[store.root] += _header(store._root, KEYRING, old, new, KEYRING_CONTEXT, True)
        return changed
    finally:
        for store in stores:
            store.close()


def _signing_set(store: LocalStore, old: MasterKey, new: MasterKey, write: bool) -> int:
    if not store._root.is_dir(SIGNING):
        return 0
    with store._root.child(SIGNING) as folder:
        return sum(_header(folder, name, old, new, signing_context(name), write) for name in folder.names())


def _items(store: LocalStore, old: MasterKey, new: MasterKey, write: bool) -> int:
    changed = 0
    for name, evidence_id in store._items().items():
        if evidence_id is None:
            raise IntegrityError(f"item folder {store.root / name} cannot be identified; nothing is rotated until a "
                                 "person has looked (run 'evidence audit')")
        with store._locked(evidence_id) as item:
            changed += _header(item, ITEM_ID, old, new, context(ITEM_ID, name), write)
            if item.exists(RECORD):
                changed += _header(item, RECORD, old, new, record_context(evidence_id), write)
            if item.is_dir(ORIGINAL):
                with item.child(ORIGINAL) as folder:
                    for original in folder.names():
                        changed += _header(folder, original, old, new, ORIGINAL_CONTEXT, write)
            if CustodyFile(item, evidence_id).interrupted() is not None:
                raise IntegrityError(f"a custody write to {evidence_id} was interrupted: start a worker once (it "
                                     "repairs it), then rotate")
            if item.exists(LOG):
                changed += _log(item, old, new, context(evidence_id, "custody"), write)
            if item.is_dir(STAMPS):
                with item.child(STAMPS) as folder:
                    for stamp in folder.names():
                        changed += _header(folder, stamp, old, new, stamp_context(evidence_id, stamp), write)
            if item.is_dir("runs"):
                with item.child("runs") as runs:
                    for run in runs.names():
                        if run.startswith(".") or not runs.is_dir(run):
                            continue   # a staging folder of a run that never committed
                        with runs.child(run) as folder:
                            for output in folder.names():
                                changed += _header(folder, output, old, new, context(evidence_id, "runs", run,
                                                                                     output), write)
    return changed


def _header(folder: Directory, name: str, old: MasterKey, new: MasterKey, what: bytes, write: bool) -> int:
    reader = folder.open_fd(name, os.O_RDONLY)
    try:
        try:
            header = rewrapped(os.pread(reader, envelope.HEADER_BYTES, 0), old, new, what)
        except IntegrityError as exc:
            raise IntegrityError(f"{folder.path / name} cannot be re-keyed ({exc}); nothing more is changed until "
                                 "a person has looked (run 'evidence audit')") from None
        if header is None or not write:
            return 0 if header is None else 1
        mode = os.fstat(reader).st_mode & 0o777
        os.fchmod(reader, 0o600)   # sealed files are read-only, for their owner too
        writer = folder.open_fd(name, os.O_WRONLY)
        try:
            if os.fstat(writer).st_ino != os.fstat(reader).st_ino:
                raise IntegrityError(f"{folder.path / name} was replaced during the rotation")
            os.pwrite(writer, header, 0)
            os.fsync(writer)
        finally:
            os.close(writer)
            os.fchmod(reader, mode)
        return 1
    finally:
        os.close(reader)


def _log(item: Directory, old: MasterKey, new: MasterKey, what: bytes, write: bool) -> int:
    stored = item.read_bytes(LOG)
    *lines, tail = stored.split(b"\n")
    fresh = b"".join(rewrap_line(line, old, new, what) + b"\n" for line in lines) + tail
    if fresh == stored or not write:
        return 0 if fresh == stored else 1
    item.replace(LOG, fresh)
    return 1
