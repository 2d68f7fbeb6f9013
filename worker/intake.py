"""Ingest: a file becomes a stored original, a custody record and an intake job."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.errors import BadSource
from worker.jobs import submit
from worker.progress import progress_bar
from worker.queue import JobQueue
from worker.store import EvidenceStore

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Ingested:
    source: str
    evidence_id: str
    duplicate: bool
    size: int
    location: str
    job_id: str | None

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


def ingest(
    store: EvidenceStore,
    queue: JobQueue,
    path: Path,
    *,
    actor: str,
    name: str | None = None,
    case: str | None = None,
    collected_by: str | None = None,
    languages: Sequence[str] = (),
    note: str | None = None,
    enqueue: bool = True,
    follow_symlinks: bool = True,
) -> Ingested:
    """Store ``path`` as an original and (unless told not to) queue the intake pipeline.

    The uploader's name is recorded, never used as a path. ``follow_symlinks``
    is off for the inbox, where a link could point anywhere on the machine.
    """
    path = Path(path)
    shown = readable_name(str(path))[0]  # the path as text for reports and errors, whatever its bytes
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        info = os.stat(path, follow_symlinks=follow_symlinks)
        if stat.S_ISDIR(info.st_mode):
            raise BadSource(f"{shown} is a directory; ingest the files in it (for example: evidence ingest {shown}/*)")
        if not stat.S_ISREG(info.st_mode):
            raise BadSource(f"{shown} is not a regular file")
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BadSource(f"{shown} does not exist") from None
    except OSError as exc:
        raise BadSource(f"{shown} cannot be opened: {exc.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):  # swapped after the check above
            raise BadSource(f"{shown} is not a regular file")
        original_name, name_bytes = readable_name(name if name is not None else path.name)
        intake = {
            "original_name": original_name,
            "original_name_bytes_hex": name_bytes,
            "case": case,
            "collected_by": collected_by,
            "languages": list(languages),
            "note": note,
        }
        with progress_bar(opened.st_size, "storing original") as bar:
            stored = store.put_original(handle, intake=intake, actor=actor, size_hint=opened.st_size, progress=bar)
    job_id = None
    if enqueue:
        job, _ = submit(store, queue, stored.evidence_id, "intake", {}, actor=actor,
                        reason="duplicate upload" if stored.duplicate else "ingest")
        job_id = job.id
    return Ingested(shown, stored.evidence_id, stored.duplicate, stored.size, stored.location, job_id)
