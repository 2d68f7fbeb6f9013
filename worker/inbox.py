"""The watched inbox: files that have finished arriving are ingested, then moved aside.

A file is ingested once its size and modification time have not changed for
``stable_s`` seconds. Only after the store has the original durably is the
inbox copy moved to ``.ingested/``; a file that cannot be ingested stays
where it is with a ``<name>.error`` note beside it, and is tried again when
the file changes (or the watcher restarts). Nothing in the inbox is ever deleted.
"""

from __future__ import annotations

import logging
import os
import stat
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

    def _note(self, path: Path, reason: str) -> None:
        note = path.with_name(path.name + NOTE_SUFFIX)
        note.write_text(f"{utc_now()} not ingested: {reason}\nThe file was left here untouched. "
                        "Fix the problem or replace the file; it is tried again when it changes.\n",
                        encoding="utf-8")
        log.error("inbox file not ingested", extra={"file": path.name, "reason": reason})

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
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            signature = (info.st_size, info.st_mtime_ns)
            if self._failed.get(name) == signature:
                continue  # failed as it is now; a changed file is tried again
            if not stat.S_ISREG(info.st_mode):
                kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a link or device)"
                self._note(path, f"{name!r} is {kind}; put the files themselves in the inbox")
                self._failed[name] = signature
                continue
            seen = self._seen.get(name)
            if seen is None or seen[:2] != signature:
                self._seen[name] = (*signature, now)
                continue
            if now - seen[2] < self.stable_s:
                continue
            result = self._ingest_one(path, signature)
            if result is not None:
                results.append(result)
        for table in (self._seen, self._failed):
            for name in set(table) - present:
                del table[name]
        return results

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
        moved = self._move_done(path, result.evidence_id)
        self._seen.pop(path.name, None)
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
