"""The store and queue the settings name."""

from __future__ import annotations

from worker.config import Settings
from worker.local_store import LocalStore
from worker.queue import JobQueue
from worker.sqlite_queue import SqliteQueue
from worker.store import EvidenceStore


def open_store(settings: Settings) -> EvidenceStore:
    # Only "local" validates today; S3Store joins here behind the same port.
    return LocalStore(settings.store_root, min_free_bytes=settings.store.min_free_bytes)


def open_queue(settings: Settings) -> JobQueue:
    q = settings.queue
    return SqliteQueue(settings.queue_path, max_attempts=q.max_attempts,
                       backoff_base_s=q.backoff_base_s, backoff_max_s=q.backoff_max_s)
