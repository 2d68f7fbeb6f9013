"""Free space: a full disk pauses work; it never fails or truncates evidence."""

from __future__ import annotations

import errno
import os
import shutil
import stat
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


class FilledByItself(EvidenceError):
    """A run filled the disk with its own output: the file, not the machine, is at fault. Retrying would
    fill the disk for every other job again, so the job is dead-lettered instead of paused."""

    retryable = False


# A run that met a full disk filled it itself when it wrote at least this share of the space that was free
# when it started, and several times its original: derivatives are about the original's size (a masked video,
# a transcript), so a run writing far more is being fed more than its file declared.
_SELF_FILLED_SHARE = 0.5
_SELF_FILLED_TIMES_ORIGINAL = 4


def written_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder``, links not followed."""
    total = 0
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def judged(error: BaseException, written: int, free_at_start: int, original: int) -> BaseException:
    """``error`` (a full disk met by a run that wrote ``written`` bytes besides its copy of the ``original``-
    byte original, when ``free_at_start`` bytes were free): the same error for an outage, FilledByItself
    when the run filled the disk on its own."""
    if written >= _SELF_FILLED_SHARE * free_at_start and written > _SELF_FILLED_TIMES_ORIGINAL * original:
        return FilledByItself(
            f"the run wrote {written:,} bytes from an original of {original:,} bytes and filled the disk by "
            f"itself ({free_at_start:,} bytes were free when it started): dead-lettered as a bad file instead "
            "of retried, which would fill the disk for every other job again. If the recording is genuine, "
            "free space and retry it")
    return error


def ensure_free(folder: Path, needed: int, keep_free: int, what: str) -> None:
    """DiskFull unless ``folder``'s file system can take ``needed`` bytes and still keep ``keep_free``."""
    free = shutil.disk_usage(folder).free
    if free - needed < keep_free:
        reserve = f", and store.min_free_bytes = {keep_free:,} bytes must stay free" if keep_free else ""
        raise DiskFull(f"not enough space to {what} in {folder}: {free:,} bytes are free, {needed:,} are"
                       f" needed{reserve}. Work resumes once space is freed")
