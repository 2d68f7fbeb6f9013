"""The watched inbox: files that have finished arriving are ingested, then moved aside.

A file is ingested once its size and modification time have not changed for
``stable_s`` seconds and no process holds it open for writing any more (a
phone upload that pauses is not a finished upload); where no check can tell
(another account's upload, no leases), it must stay unchanged for ``quiet_s``
instead, and for a while after it is moved it is watched in case it grows
(worker.intake.moved_uploads). Only after the store has
the original durably is the inbox copy moved to ``.ingested/``; a file that
cannot be ingested stays where it is with a note in ``.error/``, and is
tried again when the file changes (or the watcher restarts). A file that
changed while it was stored is kept as what arrived, logged in that item's
custody as an incomplete upload, and ingested again once it settles.

Every name is resolved relative to the inbox folder, held open, without
following links: a link planted as ``.ingested`` or ``.error`` is refused
and nothing moves. Nothing in the inbox is ever deleted or overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from worker.errors import EvidenceError
from worker.fs.directory import Directory, LinkRefused
from worker.fs.space import is_disk_full
from worker.fs.writers import open_for_writing
from worker.intake.ingest import Ingested, open_source, readable_name
from worker.intake.moved_uploads import MovedUploads
from worker.record import custody
from worker.record.store import EvidenceStore
from worker.record.timestamps import utc_now

log = logging.getLogger("evidence.inbox")

DONE_FOLDER = ".ingested"
NOTES_FOLDER = ".error"
# Names that upload tools give files they are still writing.
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp")
_NAME_MAX = 255  # bytes, on every common Linux file system

Ingest = Callable[[BinaryIO, str, str], Ingested]   # (open file, uploader's name, name as shown) -> result


def fitted_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` within the file system's name limit, shortened with a hash of the whole when needed."""
    whole = name + suffix
    if len(os.fsencode(whole)) <= _NAME_MAX:
        return whole
    mark = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    room = _NAME_MAX - len(os.fsencode(mark + suffix))
    return os.fsdecode(os.fsencode(name)[:room]) + mark + suffix  # the same bytes, cut; never a new character


class Inbox:
    def __init__(self, folder: Path, ingest: Ingest, store: EvidenceStore, *, stable_s: float, actor: str,
                 quiet_s: float = 120.0, recheck_s: float = 3600.0, clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.ingest = ingest
        self.store = store
        self.actor = actor
        self.stable_s = stable_s
        self.quiet_s = max(quiet_s, stable_s)
        self.clock = clock
        self.moved = MovedUploads(recheck_s)
        self.root = Directory.open(self.folder, create=True)
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
        self._failed: dict[str, tuple[int, int]] = {}      # name -> (size, mtime_ns) when it failed
        self.trouble = 0   # entries the last scan left with a note, or 1 when the inbox itself was refused
        self.waiting = 0   # entries the last scan left because they may still be arriving
        self._told: set[str] = set()  # files already logged as waiting for the quiet period

    def close(self) -> None:
        self.root.close()

    def _folder(self, name: str) -> Directory:
        """``.ingested`` or ``.error``, opened afresh for each use: a link swapped in is refused, not followed."""
        return self.root.child(name, create=True)

    # -- notes and moves ---------------------------------------------------

    def _note(self, name: str, reason: str, *, stored_as: str | None = None) -> None:
        """Explain, in ``.error/``, why the file is still in the inbox."""
        self.trouble += 1
        shown = readable_name(name)[0]
        log.error("inbox file left in place", extra={"file": shown, "reason": reason, "evidence_id": stored_as})
        if stored_as is None:
            text = (f"{utc_now()} {shown!r} was not ingested: {reason}\nThe file was left in the inbox untouched. "
                    "Fix the problem or replace the file; it is tried again when it changes.\n")
        else:
            text = (f"{utc_now()} {shown!r} was stored as evidence {stored_as}, but not moved to {DONE_FOLDER}/:"
                    f" {reason}\nThe evidence is safe in the store; the inbox copy may be removed by hand.\n")
        try:
            with self._folder(NOTES_FOLDER) as notes:
                fd, tmp = notes.new_temp(".note-")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                # Replaces our own older note; a link planted there is replaced, never followed.
                notes.rename(tmp, notes, fitted_name(name, ".txt"))
        except (OSError, EvidenceError) as exc:
            log.error("could not write the inbox note", extra={"file": shown, "reason": str(exc)})

    def _clear_note(self, name: str) -> None:
        try:
            with self._folder(NOTES_FOLDER) as notes:
                notes.unlink(fitted_name(name, ".txt"), missing_ok=True)
        except (OSError, EvidenceError):
            pass

    def _move_done(self, name: str, evidence_id: str) -> str:
        with self._folder(DONE_FOLDER) as done:
            candidates = [fitted_name(name), fitted_name(name, f".{evidence_id[:12]}")]
            candidates += [fitted_name(name, f".{evidence_id[:12]}.{n}") for n in range(1, 1000)]
            for candidate in candidates:
                try:
                    self.root.link(name, done, candidate)  # never overwrites an earlier arrival of the same name
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    # exFAT/FAT/SMB inboxes have no hard links: rename into a name that is free.
                    if done.exists(candidate):
                        continue
                    self.root.rename(name, done, candidate)
                    return candidate
                self.root.unlink(name)
                return candidate
        raise EvidenceError(f"cannot find a free name for {readable_name(name)[0]!r} in {DONE_FOLDER}/")

    # -- scanning ----------------------------------------------------------

    def scan(self) -> list[Ingested]:
        """One pass over the inbox; returns what was ingested in it."""
        self.trouble = self.waiting = 0
        for special in (DONE_FOLDER, NOTES_FOLDER):
            try:
                self._folder(special).close()
            except LinkRefused as exc:
                log.error("inbox refused: nothing is moved or noted while this stands", extra={"reason": str(exc)})
                self.trouble = 1
                return []
        now = self.clock()
        present: set[str] = set()
        results: list[Ingested] = []
        for name in self.root.names():
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES):
                continue
            present.add(name)
            try:
                result = self._consider(name, now)
            except Exception as exc:  # one bad entry must not stop the others
                log.exception("inbox entry could not be handled", extra={"file": readable_name(name)[0]})
                self._failed[name] = self._signature(name)
                self._note(name, f"unexpected error: {exc}")
                continue
            if result is not None:
                results.append(result)
        for table in (self._seen, self._failed):
            for name in set(table) - present:
                del table[name]
        return results + self._recheck_moved(time.time())

    def _signature(self, name: str) -> tuple[int, int]:
        try:
            info = self.root.lstat(name)
        except OSError:
            return (-1, -1)
        return (info.st_size, info.st_mtime_ns)

    def _consider(self, name: str, now: float) -> Ingested | None:
        try:
            info = self.root.lstat(name)
        except FileNotFoundError:
            return None
        signature = (info.st_size, info.st_mtime_ns)
        if self._failed.get(name) == signature:
            return None  # failed as it is now; a changed file is tried again
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a link or device)"
            self._note(name, f"{readable_name(name)[0]!r} is {kind}; put the files themselves in the inbox")
            self._failed[name] = signature
            return None
        seen = self._seen.get(name)
        if seen is None or seen[:2] != signature:
            self._seen[name] = (*signature, now)
            self.waiting += 1
            return None
        if now - seen[2] < self.stable_s:
            self.waiting += 1
            return None
        # Unchanged since this watcher first saw it, or since it was last written, whichever is longer.
        unchanged_s = max(now - seen[2], time.time() - info.st_mtime)
        result = self._ingest_one(name, signature, now, unchanged_s)
        self.waiting += result is None and name in self._seen
        return result

    def _readiness(self, handle: BinaryIO, shown: str, unchanged_s: float) -> str:
        """"ready", "writing" (a process has it open for writing) or "wait" (no check can tell: keep waiting)."""
        writing = open_for_writing(handle.fileno())
        if writing:
            log.info("inbox file is still open for writing; waiting", extra={"file": shown})
            return "writing"
        if writing is None and unchanged_s < self.quiet_s:
            if shown not in self._told:
                self._told.add(shown)
                log.info("cannot tell whether the inbox file is still being written (another account's upload); "
                         "waiting until it has been unchanged for worker.inbox_quiet_s",
                         extra={"file": shown, "quiet_s": self.quiet_s})
            return "wait"
        self._told.discard(shown)
        return "ready"

    def _ingest_one(self, name: str, signature: tuple[int, int], now: float, unchanged_s: float) -> Ingested | None:
        shown = readable_name(name)[0]
        try:
            with open_source(name, dir_fd=self.root.fd, follow_symlinks=False) as handle:
                readiness = self._readiness(handle, shown, unchanged_s)
                if readiness != "ready":
                    if readiness == "writing":
                        self._seen[name] = (*signature, now)  # unchanged, but not finished: start counting again
                    return None
                before = os.fstat(handle.fileno())
                result = self.ingest(handle, name, shown)
                after = os.fstat(handle.fileno())
        except (EvidenceError, OSError) as exc:
            self._seen.pop(name, None)
            if is_disk_full(exc):  # an outage: tried again on a later scan, no note that blames the file
                log.error("inbox file not stored: the disk is full", extra={"file": shown, "reason": str(exc)})
                return None
            self._note(name, str(exc))
            self._failed[name] = signature
            return None
        self._seen.pop(name, None)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or after.st_size != result.size:
            self._log_incomplete(shown, result.evidence_id, result.size, after.st_size)
            return result
        try:
            now_there = self.root.lstat(name)
        except FileNotFoundError:
            log.warning("inbox file was removed while it was stored; what was read is stored",
                        extra={"file": shown, "evidence_id": result.evidence_id})
            return result
        if now_there.st_ino != before.st_ino:
            return result  # a new upload took the name meanwhile; it is ingested once it settles
        try:
            moved = self._move_done(name, result.evidence_id)
            with self._folder(DONE_FOLDER) as done:
                self.moved.add(done, moved, after, result.evidence_id, result.size, time.time())
        except (OSError, EvidenceError) as exc:
            # Stored and queued; only the tidying failed. Do not store it again on every scan.
            self._failed[name] = signature
            self._note(name, str(exc), stored_as=result.evidence_id)
            return result
        self._clear_note(name)
        if result.not_queued:
            log.error("inbox file stored, but its intake was not queued", extra={
                "file": shown, "evidence_id": result.evidence_id, "reason": result.not_queued})
        log.info("inbox file ingested", extra={
            "file": shown, "evidence_id": result.evidence_id, "duplicate": result.duplicate,
            "job_id": result.job_id, "moved_to": f"{DONE_FOLDER}/{readable_name(moved)[0]}",
        })
        return result

    def _log_incomplete(self, shown: str, evidence_id: str, stored_size: int, size_now: int) -> None:
        """What was stored is kept (it is what arrived); the finished file is stored once it settles."""
        log.warning("inbox file changed after it was stored: stored as an incomplete upload; the finished file "
                    "is stored once it settles", extra={"file": shown, "evidence_id": evidence_id})
        self.store.append_custody(evidence_id, custody.INCOMPLETE_UPLOAD, self.actor, {
            "inbox_name": shown, "stored_size": stored_size, "size_after_storing": size_now,
            "reason": "the file was still being written after it was stored",
        })

    def _recheck_moved(self, now: float) -> list[Ingested]:
        """Moved uploads that grew: report each at once, and store it again, complete, once it settles."""
        results = []
        with self._folder(DONE_FOLDER) as done:
            for name, moved, info, settled in self.moved.due(done, now, self.stable_s):
                shown = readable_name(name)[0]
                try:
                    if not settled:
                        self._log_incomplete(shown, moved.evidence_id, moved.stored_size, info.st_size)
                        continue
                    with open_source(name, dir_fd=done.fd, follow_symlinks=False) as handle:
                        unchanged_s = max(now - moved.changed_since, now - info.st_mtime)
                        readiness = self._readiness(handle, shown, unchanged_s)
                        if readiness == "writing":
                            moved.changed_since = now
                        if readiness != "ready":
                            continue
                        after = os.fstat(handle.fileno())
                        result = self.ingest(handle, name, shown)
                except (EvidenceError, OSError) as exc:
                    log.error("a moved upload that grew could not be stored again",
                              extra={"file": shown, "reason": str(exc)})
                    continue
                self.moved.add(done, name, after, result.evidence_id, result.size, now)
                log.info("a moved upload that grew was stored again, complete", extra={
                    "file": shown, "evidence_id": result.evidence_id, "incomplete": moved.evidence_id})
                results.append(result)
        return results

    def scan_settled(self) -> list[Ingested]:
        """Ingest what is there now and stays unchanged for ``stable_s`` (for one-shot runs).

        ``trouble`` then counts what was refused or noted in either pass, and
        ``waiting`` what the second pass left because it may still be arriving.
        """
        results = self.scan()
        trouble = self.trouble
        time.sleep(self.stable_s)
        results += self.scan()
        self.trouble = max(trouble, self.trouble)
        return results

    def watch(self, stop: threading.Event, poll_s: float) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # a bad scan must not stop the watcher; the next one may succeed
                log.exception("inbox scan failed")
            stop.wait(poll_s)
