"""Ingest: a file becomes a stored original, a custody record and an intake job."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from worker.errors import BadSource, CustodyError, QueueUnavailable
from worker.fs.space import DiskFull
from worker.jobs.queue import JobQueue
from worker.jobs.submit import submit
from worker.progress import progress_bar
from worker.record.store import EvidenceStore

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Ingested:
    source: str
    evidence_id: str
    duplicate: bool
    size: int
    location: str
    job_id: str | None
    not_queued: str | None = None   # stored, but the queue could not take its intake job (it is on record)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def readable_name(name: str) -> tuple[str, str | None]:
    """(name as valid UTF-8 text, hex of the exact bytes when they were not valid UTF-8)."""
    try:
        name.encode("utf-8")
        return name, None
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "backslashreplace"), raw.hex()


def parse_languages(text: str | Sequence[str] | None) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text or [])
    codes = [item.strip().lower() for item in items if item.strip()]
    bad = [code for code in codes if not LANGUAGE_CODE.match(code)]
    if bad:
        raise ValueError(f"language codes are ISO 639 codes like ru or ce, not {', '.join(map(repr, bad))}")
    return codes


def open_source(path: Path | str, *, dir_fd: int | None = None, follow_symlinks: bool = True) -> BinaryIO:
    """Open an upload for reading; BadSource unless it is a regular file.

    ``O_NONBLOCK``: a FIFO swapped in for the file cannot hang the open, and
    the check is made on the open descriptor, so a swap after it changes
    nothing. ``follow_symlinks`` is off for the inbox, where a link could
    point anywhere on the machine.
    """
    shown = readable_name(str(path))[0]
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BadSource(f"{shown} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadSource(f"{shown} is a symbolic link; links are never followed here") from None
        raise BadSource(f"{shown} cannot be opened: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadSource(f"{shown} is a directory; ingest the files in it (for example: evidence ingest {shown}/*)")
        raise BadSource(f"{shown} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def ingest(store: EvidenceStore, queue: JobQueue, path: Path, *, name: str | None = None, **intake) -> Ingested:
    """Store the file at ``path`` as an original and (unless told not to) queue the intake pipeline."""
    with open_source(path) as handle:
        return ingest_handle(store, queue, handle, source=readable_name(str(path))[0],
                             name=name if name is not None else Path(path).name, **intake)


def ingest_handle(
    store: EvidenceStore,
    queue: JobQueue,
    handle: BinaryIO,
    *,
    source: str,
    name: str,
    actor: str,
    case: str | None = None,
    collected_by: str | None = None,
    languages: Sequence[str] = (),
    note: str | None = None,
    enqueue: bool = True,
    size: int | None = None,
) -> Ingested:
    """Store what ``handle`` reads as an original and (unless told not to) queue the intake pipeline.

    The uploader's name is recorded, never used as a path.
    """
    original_name, name_bytes = readable_name(name)
    intake = {
        "original_name": original_name,
        "original_name_bytes_hex": name_bytes,
        "case": case,
        "collected_by": collected_by,
        "languages": list(languages),
        "note": note,
    }
    if size is None and hasattr(handle, "fileno"):
        try:
            size = os.fstat(handle.fileno()).st_size
        except (OSError, ValueError):   # a stream with no file behind it (an HTTP body): size unknown
            size = None
    with progress_bar(size, "storing original") as bar:
        stored = store.put_original(handle, intake=intake, actor=actor, size_hint=size, progress=bar)
    job_id = not_queued = None
    if enqueue:
        try:
            job, _ = submit(store, queue, stored.evidence_id, "intake", {}, actor=actor,
                            reason="duplicate upload" if stored.duplicate else "ingest")
            job_id = job.id
        except (QueueUnavailable, DiskFull, CustodyError) as exc:
            # The evidence is stored either way; say so, and how its processing will still come.
            not_queued = (f"{exc}; the evidence is stored, and the next worker start (or 'evidence requeue "
                          "--missing') queues its intake once the cause is fixed")
    return Ingested(source, stored.evidence_id, stored.duplicate, stored.size, stored.location, job_id, not_queued)
