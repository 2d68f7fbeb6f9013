"""File locks that mark a live owner.

A process holds an exclusive ``flock`` on a lock file for as long as it works
on something (a run's work folder, a staging folder, an upload). The kernel
drops the lock when the process dies, however it dies, so "nobody holds the
lock" is a reliable sign that what it guarded was abandoned.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Something this young may have been created by an owner that has not taken its lock yet.
OWNER_GRACE_S = 60


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the lock on ``path`` (created if missing) for the ``with`` block, waiting for it if need be."""
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def abandoned(path: Path) -> bool:
    """True when nobody holds the lock on ``path`` now. FileNotFoundError if there is no such file."""
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
