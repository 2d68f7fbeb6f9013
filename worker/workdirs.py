"""Private work folders for runs, and clean-up of those whose worker died.

A work folder holds a copy of an unredacted original, so it must not
outlive its run: it is removed when the run ends, and a folder left by a
killed worker (its lock no longer held) is removed when any worker starts.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.locks import OWNER_GRACE_S, abandoned, exclusive

log = logging.getLogger("evidence.workdirs")

LOCK = ".lock"


@contextmanager
def private_workdir(root: Path, prefix: str) -> Iterator[Path]:
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
    try:
        with exclusive(folder / LOCK):
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
            if not abandoned(folder / LOCK):
                continue  # its worker is alive
        except FileNotFoundError:
            if time.time() - folder.stat().st_mtime < OWNER_GRACE_S:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        log.warning("removed the work folder of a worker that stopped mid-run", extra={"folder": str(folder)})
    return removed
