"""Streaming SHA-256: hashing while copying, and re-hashing what is stored."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from worker.progress import SILENT, Progress

# Large reads keep the per-call overhead negligible; hashlib releases the GIL
# on buffers this size, so hashing one stream does not stall another thread.
CHUNK_BYTES = 8 * 2**20


def copy_and_hash(source: BinaryIO, target: BinaryIO | None, progress: Progress = SILENT) -> tuple[str, int]:
    """Read ``source`` to its end, writing to ``target`` if given; return (lowercase hex SHA-256, size)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    size = 0
    while n := source.readinto(buffer):
        chunk = view[:n]
        digest.update(chunk)
        if target is not None:
            target.write(chunk)
        size += n
        progress.update(n)
    return digest.hexdigest(), size
