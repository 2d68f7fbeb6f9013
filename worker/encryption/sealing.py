"""How a store keeps what it writes: sealed under the master key, or plain when encryption is off.

Every store (local disk, S3) asks one ``Sealing`` for the name of an item
and for a writer or reader around each object, so encryption is one
decision per store and not one per call site.

A store that holds sealed items has a keyring: one small sealed object at
its root holding a random naming key. Item names are an HMAC of the
evidence id under that key, so a listing reveals nothing a copy of a video
could be matched against, and rotating the master key re-wraps the keyring
like any other object instead of renaming every item. The keyring is also
the check at start: a store that was sealed under another key, or is
sealed while no key is configured (or the reverse), is refused before
anything is read or written.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.encryption import envelope
from worker.encryption.envelope import MasterKey, OpeningReader, SealingWriter
from worker.encryption.keys import storage_name
from worker.errors import ConfigError, IntegrityError

KEYRING = "keyring.sealed"
_SMALL_CHUNK_BYTES = 4096
KEYRING_CONTEXT = b"evidence-worker store keyring v1"


def context(*parts: str) -> bytes:
    """What an object is, bound into its ciphertext: the same bytes elsewhere do not open."""
    return "\x1f".join(("evidence-worker object", *parts)).encode("utf-8")


class Sealing:
    def __init__(self, key: MasterKey | None = None, naming_key: bytes | None = None):
        self.key, self._naming_key = key, naming_key
        self._tokens = AESSIV(HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                                   info=b"evidence-worker tokens v1").derive(naming_key)) if naming_key else None

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def name(self, text: str) -> str:
        """What a store calls ``text`` (an evidence id, a run) on disk or in a listing: a keyed hash when sealed."""
        return storage_name(self._naming_key, text) if self._naming_key else text

    def item_name(self, evidence_id: str) -> str:
        return self.name(evidence_id)

    def run_name(self, evidence_id: str, run_id: str) -> str:
        # A run id is derived from the evidence id and the pipeline alone: in the clear it would name the video.
        return self.name(f"{evidence_id}/runs/{run_id}") if self._naming_key else run_id

    def token(self, text: str, what: bytes) -> str:
        """``text`` encrypted deterministically (AES-SIV): the same text gives the same token, so a queue can
        still find equal values (an evidence id) without holding them in clear."""
        if self._tokens is None:
            return text
        return "sealed:" + base64.b64encode(self._tokens.encrypt(text.encode("utf-8"), [what])).decode("ascii")

    def untoken(self, token: str, what: bytes) -> str:
        """The text of a token (a value written before encryption was on is returned as it is)."""
        if self._tokens is None or not token.startswith("sealed:"):
            return token
        try:
            return self._tokens.decrypt(base64.b64decode(token[7:], validate=True), [what]).decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag):
            raise IntegrityError("a sealed value in the job queue does not open: altered, or another key") from None

    def stored_size(self, size: int, *, media: bool = False) -> int:
        """How many bytes an object of ``size`` bytes takes as stored."""
        return size if self.key is None else envelope.sealed_size(size, padded=media)

    @contextmanager
    def writer(self, target: BinaryIO, what: bytes, *, media: bool = False) -> Iterator[BinaryIO]:
        """Where to write an object's plaintext; sealed into ``target`` when encryption is on.

        ``media``: an original or a derivative, whose exact size could tell
        which known video it is: padded (to within about 12 %, never less than
        a chunk) so that it cannot.
        """
        if self.key is None:
            yield target
            return
        with SealingWriter(target, self.key, what, padded=media) as sealed:
            yield sealed  # type: ignore[misc]

    def reader(self, source: BinaryIO, what: bytes) -> BinaryIO:
        """The plaintext of ``source``; when sealed, each chunk is checked (IntegrityError) as it is read."""
        return source if self.key is None else OpeningReader(source, self.key, what)  # type: ignore[return-value]

    def seal_bytes(self, data: bytes, what: bytes) -> bytes:
        """A small object (a record, a custody event) sealed, padded to whole 4 KiB chunks: the length of a
        case name or a file name does not show in the object's."""
        if self.key is None:
            return data
        out = io.BytesIO()
        with SealingWriter(out, self.key, what, _SMALL_CHUNK_BYTES, padded=True) as writer:
            writer.write(data)
        return out.getvalue()

    def open_bytes(self, data: bytes, what: bytes) -> bytes:
        if self.key is None:
            return data
        out = io.BytesIO()
        envelope.unseal(io.BytesIO(data), out, self.key, what)
        return out.getvalue()

    def encode_line(self, line: bytes, what: bytes) -> bytes:
        """One line of an append-only log (``line`` ends with a newline), as stored."""
        if self.key is None:
            return line
        return base64.b64encode(self.seal_bytes(line.rstrip(b"\n"), what)) + b"\n"

    def decode_line(self, stored: bytes, what: bytes) -> bytes:
        """A stored log line (without its newline) as written; IntegrityError if it does not open."""
        if self.key is None:
            return stored
        try:
            return self.open_bytes(base64.b64decode(stored, validate=True), what)
        except binascii.Error:
            raise IntegrityError("a sealed log line is not what this software writes (altered)") from None


PLAIN = Sealing()


def open_keyring(key: MasterKey | None, read: Callable[[], bytes | None], write_once: Callable[[bytes], bool],
                 holds_items: Callable[[], bool], where: str,
                 holds_sealed_items: Callable[[], bool] | None = None) -> Sealing:
    """The store's Sealing, after checking that ``key`` is the one the store was sealed under.

    ``read`` gives the stored keyring or None; ``write_once`` stores a new
    one unless one exists (False then); ``holds_items`` says whether the
    store has items already, ``holds_sealed_items`` whether any is sealed.
    """
    stored = read()
    if stored is None and holds_sealed_items is not None and holds_sealed_items():
        # Never a fresh keyring (its names would miss every item) and never plain writes among sealed ones.
        raise ConfigError(f"{where} holds sealed items but its keyring ({KEYRING}) is missing: it cannot be used "
                          "as it is. Restore from a replica into a new store ('evidence restore --from NAME')")
    if key is None:
        if stored is not None:
            raise ConfigError(f"{where} is encrypted: configure [encryption] with its key to use it")
        return PLAIN
    if stored is None:
        if holds_items():
            raise ConfigError(f"{where} holds unencrypted evidence; encryption cannot be turned on over it. Start "
                              "an encrypted store elsewhere and move the evidence with 'evidence restore'")
        naming_key = os.urandom(32)
        sealed = Sealing(key).seal_bytes(naming_key, KEYRING_CONTEXT)
        if write_once(sealed):
            return Sealing(key, naming_key)
        stored = read()   # another process made it first
        if stored is None:
            raise ConfigError(f"the keyring of {where} could not be made or read")
    try:
        naming_key = Sealing(key).open_bytes(stored, KEYRING_CONTEXT)
    except envelope.WrongKey:
        raise ConfigError(f"{where} was encrypted under another master key than the one configured; nothing was "
                          "read or written. Check [encryption] (which key file, passphrase or KMS key)") from None
    except IntegrityError as exc:
        raise ConfigError(f"the keyring of {where} is damaged ({exc}); restore it from a replica") from None
    if len(naming_key) != 32:
        raise ConfigError(f"the keyring of {where} is not one this software writes")
    return Sealing(key, naming_key)


def rewrapped(header: bytes, old: MasterKey, new: MasterKey, what: bytes) -> bytes | None:
    """A sealed object's header re-wrapped from ``old`` to ``new``; None when it is under ``new`` already
    (a rotation that was interrupted and is run again)."""
    if envelope.key_id(header) == new.key_id:
        return None
    return envelope.rewrap(header, old, new, what)


def rewrap_line(stored: bytes, old: MasterKey, new: MasterKey, what: bytes) -> bytes:
    """A sealed log line (without its newline) with its header re-wrapped under ``new``.

    A line that is not a sealed object of ``old`` (damage the custody check
    reports, acknowledged or not) is kept byte for byte: its bytes are what
    an acknowledgement names.
    """
    try:
        sealed = base64.b64decode(stored, validate=True)
        header = rewrapped(sealed[:envelope.HEADER_BYTES], old, new, what)
    except (binascii.Error, IntegrityError):
        return stored
    return stored if header is None else base64.b64encode(header + sealed[envelope.HEADER_BYTES:])
