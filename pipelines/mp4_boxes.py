"""The box structure of an MP4/MOV file, read without a media library.

Two things no FFmpeg report says plainly: whether a track's samples live in
another file or at a URL (a data reference that is not self-contained, or a
reference movie), and whether bytes follow the recording (a ZIP archive or
anything else glued to a valid file). Only box headers and the small
data-reference boxes are read; a three-hour file costs a few thousand seeks.

Every box inside the movie header is searched, not only the usual path to
the data references: FFmpeg honours them wherever its parser meets them. What
cannot be checked (a compressed movie header, a reference table too large, a
header with absurdly many boxes) is reported as unreadable, and refused.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_SELF_CONTAINED = 0x000001
_MAX_DREF_BYTES = 64 * 1024
_MAX_BOXES = 100_000
# Top-level boxes a recording may hold (ISO BMFF and QuickTime). A header that claims more bytes than the
# file has is a truncated recording only for these; anything else there is bytes glued after the end.
_TOP_LEVEL = {b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"meta",
              b"moof", b"mfra", b"sidx", b"ssix", b"prft", b"emsg", b"pdin", b"udta"}
_PADDING = {b"free", b"skip", b"wide"}
_MAX_TRAILING_PADDING = 64 * 1024


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
    to_end: bool     # its size field was 0: "up to the end of the file"


def _boxes(handle: BinaryIO, start: int, end: int) -> Iterator[_Box | int]:
    """The boxes between ``start`` and ``end``; an int where something that is not a box begins.

    A box that claims more bytes than there are is yielded as it claims;
    the caller decides whether that is truncation or junk.
    """
    offset = start
    while offset + 8 <= end:
        handle.seek(offset)
        header = handle.read(16)
        size, kind = struct.unpack(">I4s", header[:8])
        body, to_end = offset + 8, size == 0
        if size == 1 and len(header) == 16:
            size, body = struct.unpack(">Q", header[8:16])[0], offset + 16
        elif to_end:
            size = end - offset
        if not all(0x20 <= byte < 0x7F for byte in kind) or size < body - offset:
            yield offset
            return
        yield _Box(kind, offset, body, offset + size, to_end)
        offset += size
    if offset < end:
        yield offset


def _describe_reference(kind: bytes, data: bytes) -> str:
    if kind in (b"url ", b"urn "):
        location = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        shown = "".join(ch if ch.isprintable() else "?" for ch in location)[:200]
        return f"data reference {kind.decode()!r} to {shown!r}"
    return f"data reference {kind.decode('ascii', 'replace')!r} (an alias to another file)"


def _references(handle: BinaryIO, dref: _Box, layout: Layout) -> None:
    if dref.end - dref.body > _MAX_DREF_BYTES:
        layout.unreadable.append(f"a data reference table of {dref.end - dref.body} bytes is too large to check")
        return
    handle.seek(dref.body)
    raw = handle.read(dref.end - dref.body)
    offset = 8  # version, flags, entry count
    while offset + 12 <= len(raw):
        size, kind, flags = struct.unpack(">I4sI", raw[offset:offset + 12])
        if size < 12:
            layout.unreadable.append("a damaged data reference")
            return
        if not flags & _SELF_CONTAINED:
            layout.external_references.append(_describe_reference(kind, raw[offset + 12:offset + size]))
        offset += size


def _search(handle: BinaryIO, box: _Box, layout: Layout, seen: list[int]) -> None:
    """Every box below ``box``, looking for data references, reference movies and compressed headers."""
    # An ISO 'meta' box starts with 4 bytes of version and flags; a QuickTime one does not.
    starts = (box.body, box.body + 4) if box.kind == b"meta" else (box.body,)
    for start in starts:
        for child in _boxes(handle, start, box.end):
            if isinstance(child, int) or child.end > box.end:
                break
            seen[0] += 1
            if seen[0] > _MAX_BOXES:
                if seen[0] == _MAX_BOXES + 1:
                    layout.unreadable.append(f"the movie header holds more than {_MAX_BOXES:,} boxes")
                return
            if child.kind == b"dref":
                _references(handle, child, layout)
            elif child.kind == b"rmra":
                layout.external_references.append("the movie is a reference movie that points to other files "
                                                  "or URLs")
            elif child.kind == b"cmov":
                layout.unreadable.append("its movie header is compressed ('cmov', an old QuickTime form), so its "
                                         "references to other files cannot be checked")
            else:
                _search(handle, child, layout, seen)


def _is_glued(box: _Box, size: int, recording_seen: bool) -> bool:
    """Whether a top-level box is not part of the recording (the caller has seen its movie and media)."""
    if box.end > size:
        return box.kind not in _TOP_LEVEL or recording_seen
    if not recording_seen:
        return False
    return box.to_end or (box.kind in _PADDING and box.end - box.start > _MAX_TRAILING_PADDING)


def read_layout(path: Path) -> Layout:
    """External references and trailing bytes of the MP4/MOV file at ``path``."""
    layout = Layout()
    seen_kinds: set[bytes] = set()
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        for box in _boxes(handle, 0, size):
            start = box if isinstance(box, int) else box.start
            if isinstance(box, int) or _is_glued(box, size, {b"moov", b"mdat"} <= seen_kinds):
                if start > 0:
                    layout.trailing_bytes = size - start
                    handle.seek(start)
                    layout.trailing_head = handle.read(8)
                break
            seen_kinds.add(box.kind)
            if box.end > size:
                break  # cut short: a truncated recording, which the decode check reports
            if box.kind == b"moov":
                _search(handle, box, layout, [0])
    return layout
