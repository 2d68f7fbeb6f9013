"""The watched inbox: files that have finished arriving are ingested, then moved aside.

A file is ingested once its size and modification time have not changed for
``stable_s`` seconds. Only after the store has the original durably is the
inbox copy moved to ``.ingested/``; a file that cannot be ingested stays
where it is with a ``<name>.error`` note beside it, and is tried again when
the file changes (or the watcher restarts). Nothing in the inbox is ever deleted.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from worker.errors import EvidenceError
from worker.intake import Ingested
from worker.timestamps import utc_now

log = logging.getLogger("evidence.inbox")

DONE_FOLDER = ".ingested"
NOTE_SUFFIX = ".error"
# Names that upload tools give files they are still writing.
PARTIAL_SUFFIXES = (NOTE_SUFFIX, ".part", ".partial", ".crdownload", ".download", ".tmp")


class Inbox:
    def __init__(self, folder: Path, ingest: Callable[[Path], Ingested], *, stable_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.ingest = ingest
        self.stable_s = stable_s
        self.clock = clock
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / DONE_FOLDER).mkdir(exist_ok=True)
        self._seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
        self._failed: dict[str, tuple[int, int]] = {}      # name -> (size, mtime_ns) when it failed

    def _note(self, path: Path, reason: str, *, stored_as: str | None = None) -> None:
        """Explain beside the file why it is still in the inbox."""
        log.error("inbox file left in place", extra={"file": path.name, "reason": reason, "evidence_id": stored_as})
        if stored_as is None:
            text = (f"{utc_now()} not ingested: {reason}\nThe file was left here untouched. "
                    "Fix the problem or replace the file; it is tried again when it changes.\n")
        else:
            text = (f"{utc_now()} stored as evidence {stored_as}, but not moved to {DONE_FOLDER}/: {reason}\n"
                    "The evidence is safe in the store; this copy may be removed by hand.\n")
        # Written beside and renamed over: a link planted at NAME.error is replaced, never followed.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".note-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path.with_name(path.name + NOTE_SUFFIX))
        except OSError as exc:
            log.error("could not write the inbox note", extra={"file": path.name, "reason": str(exc)})
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def _move_done(self, path: Path, evidence_id: str) -> Path:
        done = self.folder / DONE_FOLDER
        candidates = [path.name, f"{path.name}.{evidence_id[:12]}"]
        candidates += [f"{path.name}.{evidence_id[:12]}.{n}" for n in range(1, 1000)]
        for candidate in candidates:
            target = done / candidate
            try:
                os.link(path, target)  # never overwrites an earlier arrival of the same name
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # exFAT/FAT/SMB inboxes have no hard links: rename into a name that is free.
                if os.path.lexists(target):
                    continue
                os.rename(path, target)
                return target
            os.unlink(path)
            return target
        raise EvidenceError(f"cannot find a free name for {path.name} in {done}")

    def scan(self) -> list[Ingested]:
        """One pass over the inbox; returns what was ingested in it."""
        now = self.clock()
        present: set[str] = set()
        results: list[Ingested] = []
        for entry in os.scandir(self.folder):
            name = entry.name
            if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES):
                continue
            present.add(name)
            try:
                result = self._consider(entry, now)
            except Exception as exc:  # one bad entry must not stop the others
                log.exception("inbox entry could not be handled", extra={"file": name})
                self._failed[name] = self._signature(entry)
                self._note(Path(entry.path), f"unexpected error: {exc}")
                continue
            if result is not None:
                results.append(result)
        for table in (self._seen, self._failed):
            for name in set(table) - present:
                del table[name]
        return results

    @staticmethod
    def _signature(entry: os.DirEntry) -> tuple[int, int]:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return (-1, -1)
        return (info.st_size, info.st_mtime_ns)

    def _consider(self, entry: os.DirEntry, now: float) -> Ingested | None:
        name, path = entry.name, Path(entry.path)
        info = entry.stat(follow_symlinks=False)
        signature = (info.st_size, info.st_mtime_ns)
        if self._failed.get(name) == signature:
            return None  # failed as it is now; a changed file is tried again
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a link or device)"
            self._note(path, f"{name!r} is {kind}; put the files themselves in the inbox")
            self._failed[name] = signature
            return None
        seen = self._seen.get(name)
        if seen is None or seen[:2] != signature:
            self._seen[name] = (*signature, now)
            return None
        if now - seen[2] < self.stable_s:
            return None
        return self._ingest_one(path, signature)

    def _ingest_one(self, path: Path, signature: tuple[int, int]) -> Ingested | None:
        try:
            result = self.ingest(path)
        except (EvidenceError, OSError) as exc:
            self._note(path, str(exc))
            self._failed[path.name] = signature
            self._seen.pop(path.name, None)
            return None
        after = os.stat(path, follow_symlinks=False)
        if (after.st_size, after.st_mtime_ns) != signature:
            # What was stored is kept (it is what arrived); the finished file is stored once stable.
            log.warning("inbox file changed while it was stored; it will be stored again once stable",
                        extra={"file": path.name, "evidence_id": result.evidence_id})
            self._seen.pop(path.name, None)
            return result
        self._seen.pop(path.name, None)
        try:
            moved = self._move_done(path, result.evidence_id)
        except (OSError, EvidenceError) as exc:
            # Stored and queued; only the tidying failed. Do not store it again on every scan.
            self._failed[path.name] = signature
            self._note(path, str(exc), stored_as=result.evidence_id)
            return result
        log.info("inbox file ingested", extra={
            "file": path.name, "evidence_id": result.evidence_id, "duplicate": result.duplicate,
            "job_id": result.job_id, "moved_to": str(moved),
        })
        return result

    def scan_settled(self) -> list[Ingested]:
        """Ingest what is there now and stays unchanged for ``stable_s`` (for one-shot runs)."""
        results = self.scan()
        time.sleep(self.stable_s)
        return results + self.scan()

    def watch(self, stop: threading.Event, poll_s: float) -> None:
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # a bad scan must not stop the watcher; the next one may succeed
                log.exception("inbox scan failed")
            stop.wait(poll_s)
