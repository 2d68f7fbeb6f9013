"""Uploads already moved to ``.ingested/``, watched for a while in case their writer was not done.

When no check can tell whether another account still has a file open for
writing, a phone upload that pauses for longer than the quiet period is taken
as finished. Its writer may then go on writing into the same file (the move
is a hard link: the same inode). Each moved file is watched for
``window_s``: one that grows is reported at once, and stored again, complete,
once it settles. The list is kept in ``.ingested/.moved.json`` (owner-only,
like the folder), so a watcher that restarts, or runs once an hour from
cron, still sees an upload that grew while it was not running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from worker.fs.directory import Directory

STATE = ".moved.json"


@dataclass
class Moved:
    inode: int
    size: int                      # the file's size and mtime when it was stored
    mtime_ns: int
    evidence_id: str
    stored_size: int
    moved_at: float                # wall-clock seconds
    changed_size: int = -1         # the last size and mtime seen after it changed
    changed_mtime_ns: int = -1
    changed_since: float = 0.0
    reported: bool = False


class MovedUploads:
    def __init__(self, window_s: float):
        self.window_s = window_s
        self._moved: dict[str, Moved] | None = None  # read from the folder on first use

    def _entries(self, done: Directory) -> dict[str, Moved]:
        if self._moved is None:
            try:
                raw = json.loads(done.read_bytes(STATE))
                self._moved = {name: Moved(**fields) for name, fields in raw.items()}
            except (FileNotFoundError, ValueError, TypeError):
                self._moved = {}
        return self._moved

    def _save(self, done: Directory) -> None:
        fd, tmp = done.new_temp(".moved-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({name: asdict(moved) for name, moved in self._entries(done).items()}, handle)
        done.rename(tmp, done, STATE)

    def add(self, done: Directory, name: str, info: os.stat_result, evidence_id: str, stored_size: int,
            now: float) -> None:
        if self.window_s <= 0:
            return
        self._entries(done)[name] = Moved(info.st_ino, info.st_size, info.st_mtime_ns, evidence_id, stored_size, now)
        self._save(done)

    def due(self, done: Directory, now: float, stable_s: float) -> Iterator[tuple[str, Moved, os.stat_result, bool]]:
        """(name, what was stored, the file now, settled): the moved files that changed since they were stored.

        ``settled`` is False the first time a change is seen (report it) and
        True once the file has stayed unchanged for ``stable_s`` (store it again).
        """
        entries = self._entries(done)
        changed = False
        for name, moved in list(entries.items()):
            try:
                info = done.lstat(name)
            except FileNotFoundError:
                info = None
            if info is None or info.st_ino != moved.inode or now - moved.moved_at > self.window_s:
                del entries[name]
                changed = True
                continue
            signature = (info.st_size, info.st_mtime_ns)
            if signature == (moved.size, moved.mtime_ns):
                continue
            if signature != (moved.changed_size, moved.changed_mtime_ns):
                moved.changed_size, moved.changed_mtime_ns, moved.changed_since = *signature, now
                changed = True
                if not moved.reported:
                    moved.reported = True
                    yield name, moved, info, False
                continue
            if now - moved.changed_since >= stable_s:
                yield name, moved, info, True
        if changed:
            self._save(done)
