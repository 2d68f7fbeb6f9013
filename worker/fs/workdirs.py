"""Private work folders for runs, and clean-up of those whose worker died.

A work folder holds a copy of an unredacted original, so it must not
outlive its run: it is removed when the run ends, and a folder left by a
killed worker (its lock no longer held) is removed when any worker starts.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.fs.directory import OWNER_GRACE_S, PRIVATE_DIR, Directory

log = logging.getLogger("evidence.workdirs")

LOCK = ".lock"


@contextmanager
def private_workdir(root: Path, prefix: str) -> Iterator[Path]:
    with Directory.open(root, create=True) as parent:
        while True:
            name = f"{prefix}-{secrets.token_hex(6)}"
            try:
                os.mkdir(name, PRIVATE_DIR, dir_fd=parent.fd)
                break
            except FileExistsError:
                continue
        try:
            with parent.child(name) as folder:
                os.fchmod(folder.fd, PRIVATE_DIR)
                with folder.locked(LOCK):
                    yield parent.path / name
        finally:
            parent.remove_tree(name)


def remove_abandoned(root: Path) -> list[Path]:
    """Remove work folders whose owner is gone; return them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    with Directory.open(root) as parent:
        for name in parent.names():
            if not parent.is_dir(name):
                continue
            try:
                with parent.child(name) as folder:
                    if folder.held(LOCK):
                        continue  # its worker is alive
            except FileNotFoundError:
                if time.time() - parent.lstat(name).st_mtime < OWNER_GRACE_S:
                    continue
            parent.remove_tree(name)
            removed.append(parent.path / name)
            log.warning("removed the work folder of a worker that stopped mid-run", extra={"folder": name})
    return removed
