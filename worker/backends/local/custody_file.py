"""One item's custody log on disk: appends that a crash cannot silently damage.

Before each append the writer records what it is about to write and where
(``custody.intent``: the offset and the exact bytes), then appends, fsyncs
and removes the record. Bytes after that offset which are a prefix of what
the record says were being written are provably a write of this software
that died half-way: a writer's recovery path removes them and logs a
"custody repaired" event with their length and SHA-256. Any other damage
(a last line cut short with no such record, an edited log) is kept byte for
byte and stops appends until a person acknowledges it with an explicit,
logged command. Readers (audit, show) never repair anything.

With encryption on, each line is sealed on its own (base64 of an envelope
bound to the item's custody log), so appending stays appending; offsets and
intent records are about the stored bytes, the chain about the plaintext.

The caller holds the item's lock around every method.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from worker.encryption.sealing import PLAIN, Sealing, context
from worker.errors import CustodyError, IntegrityError
from worker.fs.directory import Directory
from worker.fs.space import DiskFull, is_disk_full
from worker.record import custody

LOG = "custody.jsonl"
INTENT = "custody.intent"


class CustodyFile:
    def __init__(self, folder: Directory, evidence_id: str, sealing: Sealing = PLAIN):
        self.folder = folder
        self.evidence_id = evidence_id
        self.sealing = sealing
        self._what = context(evidence_id, "custody")

    def _stored(self) -> bytes:
        try:
            return self.folder.read_bytes(LOG)
        except FileNotFoundError:
            return b""

    def _plain(self, stored: bytes) -> bytes:
        """The log as written (each complete line opened); a cut-short last line is left as it is."""
        if not self.sealing.enabled:
            return stored
        complete, torn = custody.split_lines(stored)
        return b"".join(self._open(line) + b"\n" for line in complete) + (torn or b"")

    def _open(self, line: bytes) -> bytes:
        try:
            return self.sealing.decode_line(line, self._what)
        except IntegrityError:
            # Kept as stored: the chain check reports it as damage, and an acknowledgement that names
            # these bytes closes it, exactly as for a plain log.
            return line

    def read(self) -> bytes:
        """The whole log as plaintext JSON lines."""
        return self._plain(self._stored())

    def interrupted(self) -> dict[str, Any] | None:
        """The intent record of a writer that died mid-append, if one is there."""
        try:
            return json.loads(self.folder.read_bytes(INTENT))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"offset": -1, "bytes": ""}  # cut short itself: it explains nothing

    # -- writing ---------------------------------------------------------------

    def append(self, event: str, actor: str, details: Mapping[str, Any], *, recover: bool) -> dict[str, Any]:
        """Append one event durably and return it.

        ``recover``: a writer first closes a write of this software that died
        half-way (the intent record proves it). A reader passes False and
        gets CustodyError instead, so it never changes what it reports.
        """
        if self.interrupted() is not None:
            if not recover:
                raise CustodyError(
                    "a custody write of this software was interrupted (its process died mid-append); "
                    "the next worker start, or the next write to this item, repairs it"
                )
            self.recover(actor)
        stored = self._stored()
        data = self._plain(stored)
        if not data and event != custody.INGESTED:
            raise CustodyError(
                "the custody log is missing or empty, yet the item exists: it was deleted or emptied. Nothing is "
                "appended (a new chain would hide the loss) until a person looks and runs "
                f"'evidence custody acknowledge {self.evidence_id} --reason ...'"
            )
        complete, torn = custody.split_lines(data)
        if torn is not None:
            raise CustodyError(
                "the last custody event is incomplete and no interrupted write of this software explains it "
                "(the log was cut or edited); appends stay refused until a person looks and runs "
                f"'evidence custody acknowledge {self.evidence_id} --reason ...'"
            )
        previous = self._last_intact(complete)
        entry = custody.new_event(previous, event=event, evidence_id=self.evidence_id, actor=actor, details=details)
        self._write(len(stored), self._encode(entry))
        return entry

    def recover(self, actor: str) -> dict[str, Any] | None:
        """Close the interrupted write the intent record describes; the "custody repaired" event, if one was due."""
        intent = self.interrupted()
        if intent is None:
            return None
        data = self._stored()
        offset, meant = intent.get("offset"), _hex(intent.get("bytes"))
        cut = data[offset:] if isinstance(offset, int) and 0 <= offset <= len(data) else None
        if cut is None or meant is None or not meant.startswith(cut):
            raise CustodyError(
                "the custody log changed after an interrupted write began: it was cut or edited; a person must "
                f"look, then run 'evidence custody acknowledge {self.evidence_id} --reason ...'"
            )
        if cut in (b"", meant):  # the write never began, or it finished: nothing is damaged
            self.folder.unlink(INTENT, missing_ok=True)
            return None
        self._truncate(offset)
        complete, _ = custody.split_lines(self._plain(data[:offset]))
        details = {"interrupted_write": True, "removed_length": len(cut),
                   "removed_bytes_sha256": hashlib.sha256(cut).hexdigest()}
        entry = custody.new_event(self._last_intact(complete), event=custody.CUSTODY_REPAIRED,
                                  evidence_id=self.evidence_id, actor=actor, details=details)
        self._write(offset, self._encode(entry))
        return entry

    def adopt(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Append those of another store's ``events`` this log lacks, byte for byte; how many.

        A copy's own write that died half-way is simply cut back: the same
        events are copied again, and a "repaired" event of the copy's own
        would make it differ from its source.
        """
        intent = self.interrupted()
        if intent is not None:
            stored = self._stored()
            offset, meant = intent.get("offset"), _hex(intent.get("bytes"))
            if not (isinstance(offset, int) and 0 <= offset <= len(stored) and meant is not None
                    and meant.startswith(stored[offset:])):
                raise CustodyError(f"the copied custody log of {self.evidence_id} changed after a write began")
            self._truncate(offset)
        stored = self._stored()
        complete, torn = custody.split_lines(self._plain(stored))
        have = [custody.parse(line) for line in complete]
        if torn is not None or len(have) > len(events) or any(
                mine is None or mine.get("hash") != theirs.get("hash")
                for mine, theirs in zip(have, events[:len(have)], strict=True)):
            raise CustodyError(f"the custody log of {self.evidence_id} here is not the start of the source's: "
                               "the copies have diverged; a person must look")
        offset = len(stored)
        for event in events[len(have):]:
            line = self.sealing.encode_line(custody.encode(event), self._what)
            self._write(offset, line)
            offset += len(line)
        return len(events) - len(have)

    def acknowledge(self, actor: str, reason: str) -> dict[str, Any]:
        """Close damage no interrupted write explains, keeping the damaged bytes, with the person's reason."""
        if self.interrupted() is not None:
            raise CustodyError("the damage is an interrupted write of this software: start a worker, which repairs it")
        data = self._stored()
        if not data:  # the whole log was lost: the person's word starts a new chain, and says so
            entry = custody.new_event(None, event=custody.CUSTODY_ACKNOWLEDGED, evidence_id=self.evidence_id,
                                      actor=actor, details={"log_missing": True, "reason": reason})
            self._write(0, self._encode(entry))
            return entry
        _, torn = custody.split_lines(data)
        if torn is None:
            raise CustodyError("the custody log ends with a complete event; there is nothing to acknowledge")
        complete, _ = custody.split_lines(self._plain(data))
        details = {**custody.damage(torn, len(complete) + 1), "reason": reason}
        entry = custody.new_event(self._last_intact(complete), event=custody.CUSTODY_ACKNOWLEDGED,
                                  evidence_id=self.evidence_id, actor=actor, details=details)
        self._write(len(data), b"\n" + self._encode(entry))
        return entry

    def _truncate(self, offset: int) -> None:
        fd = self.folder.open_fd(LOG, os.O_WRONLY)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.folder.unlink(INTENT, missing_ok=True)

    def _encode(self, entry: dict[str, Any]) -> bytes:
        return self.sealing.encode_line(custody.encode(entry), self._what)

    def _last_intact(self, complete: list[bytes]) -> dict[str, Any] | None:
        try:
            return custody.last_intact(complete)
        except ValueError as exc:
            raise CustodyError(f"custody log of {self.evidence_id} cannot be extended safely: {exc}") from None

    def _write(self, offset: int, line: bytes) -> None:
        intent = json.dumps({"offset": offset, "bytes": line.hex()}).encode()
        try:
            fd, tmp = self.folder.new_temp(".intent-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(intent)
                handle.flush()
                os.fsync(handle.fileno())
            self.folder.rename(tmp, self.folder, INTENT)
            self.folder.fsync()
        except OSError as exc:
            raise _as_disk_full(exc) from exc
        fd = self.folder.open_fd(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            self._undo(fd, offset)
            raise _as_disk_full(exc) from exc
        finally:
            os.close(fd)
        if offset == 0:
            self.folder.fsync()
        self.folder.unlink(INTENT, missing_ok=True)

    def _undo(self, fd: int, offset: int) -> None:
        """A write that failed in a live process (a full disk) is taken back by that process, then forgotten."""
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        except OSError:
            return  # the intent record stays: the next writer's recovery closes the cut line
        self.folder.unlink(INTENT, missing_ok=True)


def _hex(value: Any) -> bytes | None:
    try:
        return bytes.fromhex(str(value))
    except ValueError:
        return None


def _as_disk_full(exc: OSError) -> Exception:
    if is_disk_full(exc):
        return DiskFull(f"the custody log could not be written: {exc.strerror}; nothing was logged")
    return exc
