"""Uploads already moved to ``.ingested/``, watched for a while in case their writer was not done.

When no check can tell whether another account still has a file open for
writing, a phone upload that pauses for longer than the quiet period is taken
as finished. Its writer may then go on writing into the same file (the move
is a hard link: the same inode). Each moved file is watched for
``window_s``: one that grows is reported at once, and stored again, complete,
once it settles.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from worker.directory import Directory


@dataclass
class Moved:
    inode: int
    signature: tuple[int, int]     # (size, mtime_ns) when it was stored
    evidence_id: str
    stored_size: int
    moved_at: float
    changed: tuple[int, int] | None = None   # the last signature seen after it changed
    changed_since: float = 0.0
    reported: bool = False


class MovedUploads:
    def __init__(self, window_s: float):
        self.window_s = window_s
        self._moved: dict[str, Moved] = {}

    def add(self, name: str, info: os.stat_result, evidence_id: str, stored_size: int, now: float) -> None:
        self._moved[name] = Moved(info.st_ino, (info.st_size, info.st_mtime_ns), evidence_id, stored_size, now)

    def forget(self, name: str) -> None:
        self._moved.pop(name, None)

    def due(self, done: Directory, now: float, stable_s: float) -> Iterator[tuple[str, Moved, os.stat_result, bool]]:
        """(name, what was stored, the file now, settled): the moved files that changed since they were stored.

        ``settled`` is False the first time a change is seen (report it) and
        True once the file has stayed unchanged for ``stable_s`` (store it again).
        """
        for name, moved in list(self._moved.items()):
            if now - moved.moved_at > self.window_s:
                del self._moved[name]
                continue
            try:
                info = done.lstat(name)
            except FileNotFoundError:
                del self._moved[name]
                continue
            signature = (info.st_size, info.st_mtime_ns)
            if info.st_ino != moved.inode or signature == moved.signature:
                continue
            if signature != moved.changed:
                moved.changed, moved.changed_since = signature, now
                if not moved.reported:
                    moved.reported = True
                    yield name, moved, info, False
                continue
            if now - moved.changed_since >= stable_s:
                yield name, moved, info, True
