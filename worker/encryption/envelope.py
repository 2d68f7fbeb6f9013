"""Envelope encryption of one stored object, streamed in chunks with bounded memory.

Each object gets its own random 256-bit data key, wrapped (AES-256-GCM) by
the master key. The content is cut into chunks, each sealed with AES-256-GCM
under the data key; a chunk's nonce is a random per-object prefix, the
chunk's number and a flag marking the last chunk (the STREAM construction),
and every chunk authenticates the header. So:

- a changed byte anywhere fails that chunk's tag;
- chunks reordered, dropped or repeated fail (their numbers are in the nonce);
- a truncated object fails (no chunk says it is the last);
- a chunk moved from another object fails (another data key and header).

The wrapped data key is outside what the chunks authenticate, so a master
key is rotated by re-wrapping headers (``rewrap``) without touching content.
Only ``cryptography``'s AEAD primitives are used; nothing here is new crypto.

Layout: MAGIC(4) | version(1) | chunk size(4) | nonce prefix(7) | key id(8) |
wrap nonce(12) | wrapped key(48) | chunks..., each chunk size + 16 bytes of
tag, the last one shorter (possibly empty).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from worker.errors import IntegrityError

MAGIC = b"EVW\x01"
VERSION = 1          # chunks hold plaintext only: the object's size tells the plaintext's to the byte
PADDED = 2           # every chunk full, ending in how much of it is data; chunk counts padded (Padmé)
CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20   # a hostile header cannot make a reader hold more than a few chunks of this
_HEAD = struct.Struct(">4sBI7s8s12s48s")
HEADER_BYTES = _HEAD.size
_TAG = 16
_WRAP_AAD = b"evidence-worker data key v1"


class DecryptionError(IntegrityError):
    """Ciphertext that is not what was written: altered, truncated, reordered, or under another key."""


class WrongKey(DecryptionError):
    """The object was sealed under another master key than the one given."""


@dataclass(frozen=True)
class MasterKey:
    key: bytes          # 32 bytes
    key_id: bytes       # 8 bytes naming it (a hash of the key), so that a wrong key is told apart from damage

    def wrap(self, data_key: bytes, context: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, AESGCM(self.key).encrypt(nonce, data_key, _WRAP_AAD + self.key_id + context)

    def unwrap(self, nonce: bytes, wrapped: bytes, context: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(nonce, wrapped, _WRAP_AAD + self.key_id + context)
        except InvalidTag:
            raise DecryptionError("the object's data key does not open: the object was altered, or it is "
                                  "another object than the one asked for") from None


@dataclass(frozen=True)
class _Header:
    version: int
    chunk_bytes: int
    prefix: bytes
    key_id: bytes
    wrap_nonce: bytes
    wrapped: bytes

    def pack(self) -> bytes:
        return _HEAD.pack(MAGIC, self.version, self.chunk_bytes, self.prefix, self.key_id, self.wrap_nonce,
                          self.wrapped)

    def aad(self, context: bytes) -> bytes:
        # What the chunks authenticate: everything but the wrapped key, which rotation rewrites, and what the
        # object is (its context), so that a sealed object put in another's place does not open there.
        return MAGIC + bytes([self.version]) + struct.pack(">I", self.chunk_bytes) + self.prefix + context

    @classmethod
    def read(cls, source: BinaryIO) -> _Header:
        raw = _read_exactly(source, HEADER_BYTES)
        if len(raw) < HEADER_BYTES:
            raise DecryptionError("the object is shorter than its header (truncated, or not encrypted)")
        magic, version, chunk_bytes, prefix, key_id, nonce, wrapped = _HEAD.unpack(raw)
        if magic != MAGIC or version not in (VERSION, PADDED) or not _USED < chunk_bytes <= MAX_CHUNK_BYTES:
            raise DecryptionError("the object is not encrypted by this software (or its header was altered)")
        return cls(version, chunk_bytes, prefix, key_id, nonce, wrapped)


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    parts, left = [], size
    while left:
        data = source.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    if number >= 1 << 32:
        raise ValueError("an object of more than 2**32 chunks cannot be sealed")
    return prefix + struct.pack(">I", number) + (b"\x01" if last else b"\x00")


_USED = struct.Struct(">I").size   # a padded chunk's trailer: how many of its bytes are data


def padme(count: int) -> int:
    """``count`` rounded up as Padmé does (at most about 12 % more, and far fewer distinct values), so
    that an object's size no longer tells which of many known videos it is."""
    if count < 2:
        return count
    exponent = count.bit_length() - 1
    low_bits = exponent - exponent.bit_length()
    mask = (1 << low_bits) - 1
    return (count + mask) & ~mask


def sealed_size(size: int, chunk_bytes: int = CHUNK_BYTES, *, padded: bool = False) -> int:
    """How many bytes ``size`` bytes of plaintext take once sealed (a full last chunk is the last one)."""
    if padded:
        return HEADER_BYTES + padme(max(1, -(-size // (chunk_bytes - _USED)))) * (chunk_bytes + _TAG)
    chunks = max(1, -(-size // chunk_bytes))
    return HEADER_BYTES + size + chunks * _TAG


class SealingWriter:
    """A file-like target that seals what is written to it; ``close`` writes the last chunk.

    Memory: about two chunks. Closing does not close ``target``. Until
    ``close`` the object is incomplete and opens as truncated.
    """

    def __init__(self, target: BinaryIO, master: MasterKey, context: bytes, chunk_bytes: int = CHUNK_BYTES, *,
                 padded: bool = False):
        if not _USED < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be {_USED + 1} to {MAX_CHUNK_BYTES} bytes")
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce, wrapped = master.wrap(data_key, context)
        self._header = _Header(PADDED if padded else VERSION, chunk_bytes, os.urandom(7), master.key_id, wrap_nonce,
                               wrapped)
        self._target, self._cipher, self._aad = target, AESGCM(data_key), self._header.aad(context)
        self._payload = chunk_bytes - _USED if padded else chunk_bytes
        self._pending, self._number, self.size, self.closed = bytearray(), 0, 0, False
        target.write(self._header.pack())

    def write(self, data) -> int:
        self._pending += data
        # A full chunk is sealed only once more data follows it: the last chunk must carry the last flag.
        while len(self._pending) > self._payload:
            self._emit(bytes(self._pending[:self._payload]), last=False)
            del self._pending[:self._payload]
        return len(data)

    def _emit(self, data: bytes, *, last: bool) -> None:
        plain = data
        if self._header.version == PADDED:
            plain = data + bytes(self._payload - len(data)) + struct.pack(">I", len(data))
        self._target.write(self._cipher.encrypt(_nonce(self._header.prefix, self._number, last), plain, self._aad))
        self.size += len(data)
        self._number += 1

    def close(self) -> None:
        if self.closed:
            return
        if self._header.version == PADDED:
            # Chunks of padding (no data) after the data: their number is authenticated like any other.
            total = padme(self._number + 1)
            self._emit(bytes(self._pending), last=total == self._number + 1)
            while self._number < total:
                self._emit(b"", last=self._number == total - 1)
        else:
            self._emit(bytes(self._pending), last=True)
        self._pending, self.closed = bytearray(), True

    def __enter__(self) -> SealingWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()


class OpeningReader:
    """A file-like source giving the plaintext of a sealed object, each chunk checked before it is given.

    Reading to the end is what proves the object was not cut short
    (DecryptionError is raised then): a caller that stops early has
    not verified the whole object.
    """

    def __init__(self, source: BinaryIO, master: MasterKey, context: bytes):
        self._chunks = open_chunks(source, master, context)
        self._current, self._offset = b"", 0
        self._failed: DecryptionError | None = None

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._offset == len(self._current):
            if self._failed is not None:   # never a clean end after a chunk that did not open
                raise self._failed
            try:
                self._current, self._offset = next(self._chunks), 0
            except StopIteration:
                return 0
            except DecryptionError as exc:
                self._failed = exc
                raise
        n = min(len(view), len(self._current) - self._offset)
        view[:n] = self._current[self._offset:self._offset + n]
        self._offset += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts, buffer = [], bytearray(CHUNK_BYTES)
            while n := self.readinto(buffer):
                parts.append(bytes(buffer[:n]))
            return b"".join(parts)
        buffer = bytearray(size)
        return bytes(buffer[:self.readinto(buffer)])


def seal(source: BinaryIO, target: BinaryIO, master: MasterKey, context: bytes,
         chunk_bytes: int = CHUNK_BYTES) -> int:
    """Write ``source`` encrypted to ``target``; returns the plaintext size. Memory: two chunks.

    ``context`` names what the object is ("staff-roster", an evidence id and
    a file name): opening it under another context fails.
    """
    with SealingWriter(target, master, context, chunk_bytes) as writer:
        while data := source.read(chunk_bytes):
            writer.write(data)
    return writer.size



def open_chunks(source: BinaryIO, master: MasterKey, context: bytes) -> Iterator[bytes]:
    """The plaintext of an object, chunk by chunk, each checked before it is given out.

    The caller must consume the iterator to its end: only the last chunk
    proves the object was not cut short (DecryptionError is raised then).
    """
    header = _Header.read(source)
    if header.key_id != master.key_id:
        raise WrongKey("the object was encrypted under another master key than the one configured (or its "
                       "header was altered)")
    cipher, aad = AESGCM(master.unwrap(header.wrap_nonce, header.wrapped, context)), header.aad(context)
    number = 0
    current = _read_exactly(source, header.chunk_bytes + _TAG)
    while True:
        following = _read_exactly(source, header.chunk_bytes + _TAG) if len(current) == header.chunk_bytes + _TAG \
            else b""
        last = not following
        try:
            plain = cipher.decrypt(_nonce(header.prefix, number, last), current, aad)
        except InvalidTag:
            raise DecryptionError(f"chunk {number} of the object fails its check: the object was altered, "
                                  "truncated, reordered, or mixed with another") from None
        if header.version == PADDED:
            used = struct.unpack(">I", plain[-_USED:])[0] if len(plain) == header.chunk_bytes else -1
            if not 0 <= used <= header.chunk_bytes - _USED:
                raise DecryptionError(f"chunk {number} of the object is not one this software writes")
            plain = plain[:used]
        yield plain
        if last:
            return
        current, number = following, number + 1


def unseal(source: BinaryIO, target: BinaryIO, master: MasterKey, context: bytes) -> int:
    """Decrypt ``source`` into ``target``; returns the plaintext size.

    Every chunk is checked before it is written, but only the end proves
    nothing was cut off: on DecryptionError the caller discards ``target``.
    """
    size = 0
    for chunk in open_chunks(source, master, context):
        target.write(chunk)
        size += len(chunk)
    return size


def key_id(header_bytes: bytes) -> bytes:
    """Which master key a sealed object's header is under."""
    return _Header.read(io.BytesIO(header_bytes)).key_id


def rewrap(header_bytes: bytes, old: MasterKey, new: MasterKey, context: bytes) -> bytes:
    """The same header with its data key wrapped under ``new`` instead of ``old`` (same length).

    Re-wrapping retires a master key that is merely old. It does not help
    after the old key was compromised: whoever holds it and an old header
    (a backup) keeps the data key; then content must be sealed anew.
    """
    header = _Header.read(io.BytesIO(header_bytes))
    if header.key_id != old.key_id:
        raise WrongKey("the object is not under the old master key")
    nonce, wrapped = new.wrap(old.unwrap(header.wrap_nonce, header.wrapped, context), context)
    return _Header(header.version, header.chunk_bytes, header.prefix, new.key_id, nonce, wrapped).pack()

