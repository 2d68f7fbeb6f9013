"""Private work folders for runs, and clean-up of those whose worker died.

A work folder holds a copy of an unredacted original, so it must not
outlive its run: it is removed when the run ends, and a folder left by a
killed worker (its lock no longer held) is removed when any worker starts.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("evidence.workdirs")

LOCK = ".lock"
# A folder this young may be one whose owner has not taken its lock yet.
_GRACE_S = 60


@contextmanager
def private_workdir(root: Path, prefix: str) -> Iterator[Path]:
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    try:
        with open(folder / LOCK, "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned(root: Path) -> list[Path]:
    """Remove work folders whose owner is gone; return them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        try:
            with open(folder / LOCK, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its worker is alive
        except FileNotFoundError:
            if time.time() - folder.stat().st_mtime < _GRACE_S:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        log.warning("removed the work folder of a worker that stopped mid-run", extra={"folder": str(folder)})
    return removed
