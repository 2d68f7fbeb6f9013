"""The store and queue the settings name."""

from __future__ import annotations

import logging
import os
import stat

from worker.config import Settings
from worker.directory import PRIVATE_DIR, Directory
from worker.local_store import LocalStore
from worker.queue import JobQueue
from worker.sqlite_queue import SqliteQueue
from worker.store import EvidenceStore


log = logging.getLogger("evidence.backends")


def secure_home(settings: Settings) -> None:
    """EVIDENCE_HOME exists and is owner-only (0700), whatever the umask or whoever made it looser."""
    with Directory.open(settings.home, create=True) as home:
        mode = stat.S_IMODE(os.fstat(home.fd).st_mode)
        if mode & 0o077:
            os.fchmod(home.fd, PRIVATE_DIR)
            log.warning("made the evidence home owner-only", extra={"home": str(settings.home),
                                                                     "was": f"{mode:04o}", "now": "0700"})


def open_store(settings: Settings) -> EvidenceStore:
    secure_home(settings)
    # Only "local" validates today; S3Store joins here behind the same port.
    return LocalStore(settings.store_root, min_free_bytes=settings.store.min_free_bytes)


def open_queue(settings: Settings, *, read_only: bool = False) -> JobQueue:
    """``read_only``: for commands that only look (status, listings), which then work on a full disk too."""
    q = settings.queue
    return SqliteQueue(settings.queue_path, max_attempts=q.max_attempts, backoff_base_s=q.backoff_base_s,
                       backoff_max_s=q.backoff_max_s, read_only=read_only)
