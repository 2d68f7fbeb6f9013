"""Free space: a full disk pauses work; it never fails or truncates evidence."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from pipelines.errors import NoSpace
from worker.errors import EvidenceError


class DiskFull(EvidenceError):
    """Not enough free space to go on safely. Work pauses and resumes; no attempt is counted."""

    retryable = True


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, (DiskFull, NoSpace)) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    )


def ensure_free(folder: Path, needed: int, keep_free: int, what: str) -> None:
    """DiskFull unless ``folder``'s file system can take ``needed`` bytes and still keep ``keep_free``."""
    free = shutil.disk_usage(folder).free
    if free - needed < keep_free:
        reserve = f", and store.min_free_bytes = {keep_free:,} bytes must stay free" if keep_free else ""
        raise DiskFull(f"not enough space to {what} in {folder}: {free:,} bytes are free, {needed:,} are"
                       f" needed{reserve}. Work resumes once space is freed")
