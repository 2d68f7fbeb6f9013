"""Master-key rotation over a local store: every sealed object's data key re-wrapped, content untouched.

Only each object's header changes (its first bytes, rewritten in place:
one sector, so a power cut leaves the old header or the new one); custody
logs, whose every line is sealed on its own, are rewritten whole and
renamed into place. An object already under the new key is skipped, so an
interrupted rotation is finished by running it again with the same keys.
The keyring goes last: until then the store still opens with the old key.
Workers must be stopped while it runs.
"""

from __future__ import annotations

import os

from worker.backends.custody_file import LOG, CustodyFile
from worker.backends.local import _ITEM_ID, ORIGINAL_CONTEXT, LocalStore
from worker.backends.local_intake import ORIGINAL, RECORD, record_context
from worker.directory import Directory
from worker.encryption import envelope
from worker.encryption.envelope import MasterKey
from worker.encryption.sealing import KEYRING, KEYRING_CONTEXT, context, rewrap_line, rewrapped
from worker.errors import ConfigError, IntegrityError


def rotate(store: LocalStore, new: MasterKey) -> int:
    """Re-wrap everything in ``store`` (opened with the old key) under ``new``; how many objects changed."""
    old = store.sealing.key
    if old is None:
        raise ConfigError("the store is not encrypted: there is no key to rotate")
    changed = 0
    for name, evidence_id in store._items().items():
        if evidence_id is None:
            raise IntegrityError(f"item folder {name} cannot be identified; nothing more is rotated until a person "
                                 "has looked (run 'evidence audit')")
        with store._locked(evidence_id) as item:
            changed += _header(item, _ITEM_ID, old, new, context(_ITEM_ID, name))
            if item.exists(RECORD):
                changed += _header(item, RECORD, old, new, record_context(evidence_id))
            if item.is_dir(ORIGINAL):
                with item.child(ORIGINAL) as folder:
                    for original in folder.names():
                        changed += _header(folder, original, old, new, ORIGINAL_CONTEXT)
            if CustodyFile(item, evidence_id).interrupted() is not None:
                raise IntegrityError(f"a custody write to {evidence_id} was interrupted: start a worker once (it "
                                     "repairs it), then rotate")
            if item.exists(LOG):
                changed += _log(item, old, new, context(evidence_id, "custody"))
            if item.is_dir("runs"):
                with item.child("runs") as runs:
                    for run_id in runs.names():
                        if run_id.startswith(".") or not runs.is_dir(run_id):
                            continue   # a staging folder of a run that never committed
                        with runs.child(run_id) as run:
                            for output in run.names():
                                changed += _header(run, output, old, new,
                                                   context(evidence_id, "runs", run_id, output))
    changed += _header(store._root, KEYRING, old, new, KEYRING_CONTEXT)
    return changed


def _header(folder: Directory, name: str, old: MasterKey, new: MasterKey, what: bytes) -> int:
    reader = folder.open_fd(name, os.O_RDONLY)
    try:
        header = rewrapped(os.pread(reader, envelope.HEADER_BYTES, 0), old, new, what)
        if header is None:
            return 0
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


def _log(item: Directory, old: MasterKey, new: MasterKey, what: bytes) -> int:
    stored = item.read_bytes(LOG)
    *lines, tail = stored.split(b"\n")
    fresh = b"".join(rewrap_line(line, old, new, what) + b"\n" for line in lines) + tail
    if fresh == stored:
        return 0
    fd, tmp = item.new_temp(".custody-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(fresh)
            handle.flush()
            os.fsync(handle.fileno())
        item.rename(tmp, item, LOG)
        item.fsync()
    finally:
        item.unlink(tmp, missing_ok=True)
    return 1
