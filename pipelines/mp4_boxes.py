"""The box structure of an MP4/MOV file, read without a media library.

Two things no FFmpeg report says plainly: whether a track's samples live in
another file or at a URL (a data reference that is not self-contained, or a
reference movie), and whether bytes follow the last box (a ZIP archive or
anything else glued to a valid recording). Only box headers and the small
data-reference boxes are read; a three-hour file costs a few dozen seeks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# Boxes on the path from the movie to its data references.
_PATH_TO_DREF = {b"moov": b"trak", b"trak": b"mdia", b"mdia": b"minf", b"minf": b"dinf", b"dinf": b"dref"}
# Top-level boxes a recording may hold (ISO BMFF and QuickTime). A header that claims more bytes than the
# file has is a truncated recording only for these; anything else there is bytes glued after the end.
_TOP_LEVEL = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"meta",
              b"moof", b"mfra", b"sidx", b"ssix", b"prft", b"emsg", b"pdin", b"udta"}
_SELF_CONTAINED = 0x000001
_MAX_DREF_BYTES = 64 * 1024


@dataclass
class Layout:
    external_references: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)   # structures whose references cannot be checked
    trailing_bytes: int = 0
    trailing_head: bytes = b""


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int       # offset of the header
    body: int        # offset of the content
    end: int         # offset just past the box


def _boxes(handle: BinaryIO, start: int, end: int, top_level: bool = False) -> Iterator[_Box | int]:
    """The boxes between ``start`` and ``end``; an int where something that is not a box begins."""
    offset = start
    while offset + 8 <= end:
        handle.seek(offset)
        header = handle.read(16)
        size, kind = struct.unpack(">I4s", header[:8])
        body = offset + 8
        if size == 1 and len(header) == 16:
            size, body = struct.unpack(">Q", header[8:16])[0], offset + 16
        elif size == 0:
            size = end - offset
        if not all(0x20 <= byte < 0x7F for byte in kind) or size < body - offset:
            yield offset
            return
        if offset + size > end:
            if top_level and kind not in _TOP_LEVEL:
                yield offset  # not a box of a recording, whatever its first bytes claim
            return  # cut short: a truncated file, which the decode check reports
        yield _Box(kind, offset, body, offset + size)
        offset += size
    if offset < end:
        yield offset


def _describe_reference(kind: bytes, data: bytes) -> str:
    if kind in (b"url ", b"urn "):
        location = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        shown = "".join(ch if ch.isprintable() else "?" for ch in location)[:200]
        return f"data reference {kind.decode()!r} to {shown!r}"
    return f"data reference {kind.decode('ascii', 'replace')!r} (an alias to another file)"


def _references(handle: BinaryIO, dref: _Box, track: int) -> list[str]:
    handle.seek(dref.body)
    raw = handle.read(min(dref.end - dref.body, _MAX_DREF_BYTES))
    found = []
    offset = 8  # version, flags, entry count
    while offset + 12 <= len(raw):
        size, kind, flags = struct.unpack(">I4sI", raw[offset:offset + 12])
        if size < 12:
            found.append(f"track {track}: a damaged data reference")
            break
        if not flags & _SELF_CONTAINED:
            found.append(f"track {track}: {_describe_reference(kind, raw[offset + 12:offset + size])}")
        offset += size
    return found


def _walk(handle: BinaryIO, box: _Box, layout: Layout, track: list[int]) -> None:
    wanted = _PATH_TO_DREF.get(box.kind)
    for child in _boxes(handle, box.body, box.end):
        if isinstance(child, int):
            return
        if box.kind == b"moov" and child.kind == b"rmra":
            layout.external_references.append("the movie is a reference movie that points to other files or URLs")
        if box.kind == b"moov" and child.kind == b"cmov":
            layout.unreadable.append("its movie header is compressed ('cmov', an old QuickTime form), so its "
                                     "references to other files cannot be checked")
        if child.kind != wanted:
            continue
        if child.kind == b"trak":
            track[0] += 1
        if child.kind == b"dref":
            layout.external_references += _references(handle, child, track[0])
        else:
            _walk(handle, child, layout, track)


def read_layout(path: Path) -> Layout:
    """External references and trailing bytes of the MP4/MOV file at ``path``."""
    layout = Layout()
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        for box in _boxes(handle, 0, size, top_level=True):
            if isinstance(box, int):
                if box > 0:
                    layout.trailing_bytes = size - box
                    handle.seek(box)
                    layout.trailing_head = handle.read(8)
                break
            if box.kind == b"moov":
                _walk(handle, box, layout, [0])
    return layout
