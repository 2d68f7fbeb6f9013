"""Master keys: from a key file on removable media, a passphrase stretched with scrypt, or AWS KMS.

A key file holds 32 random bytes, hex-encoded, owner-only. A passphrase is
stretched with scrypt (memory-hard: 2**17 x 8 x 128 bytes = 128 MiB per try)
under a salt kept beside the store, with a check value, so that a wrong
passphrase is refused at start instead of failing on the first read.
With encryption on, an item's key in a store is a keyed hash of its
evidence id (under a random naming key kept sealed in the store's keyring,
worker.encryption.sealing), so that a copy of a video cannot be matched to
a listing of a seized disk or bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from worker.encryption.envelope import MasterKey
from worker.fs.directory import Directory

SCRYPT = {"n": 2**17, "r": 8, "p": 1}


class MasterKeyError(Exception):
    """A master key that is missing, unreadable or wrong; the message says which and what to do."""


def master(key: bytes) -> MasterKey:
    if len(key) != 32:
        raise MasterKeyError("a master key is 32 bytes")
    return MasterKey(key, hashlib.sha256(b"evidence-worker key id" + key).digest()[:8])


def _write_new(path: Path, data: bytes) -> Path:
    """``data`` in a new owner-only file (never through a link), durable with its name before it is used."""
    path = Path(path)
    with Directory.open(path.parent) as folder:
        with folder.open_file(path.name, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        folder.fsync()
    return path


def new_key_file(path: Path) -> Path:
    """A new random master key at ``path`` (which must not exist), owner-only."""
    return _write_new(path, (secrets.token_hex(32) + "\n").encode("ascii"))


def from_key_file(path: Path) -> MasterKey:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise MasterKeyError(f"the key file {path} cannot be read ({getattr(exc, 'strerror', exc)}): is the removable "
                        "medium that holds it attached?") from None
    try:
        return master(bytes.fromhex(text))
    except ValueError:
        raise MasterKeyError(f"{path} is not a key file of this software (64 hex digits)") from None


def from_passphrase(passphrase: str, settings_file: Path) -> MasterKey:
    """The key a passphrase gives under the salt in ``settings_file`` (made on first use); MasterKeyError if wrong."""
    if not passphrase:
        raise MasterKeyError("the passphrase is empty: set EVIDENCE_PASSPHRASE (or EVIDENCE_PASSPHRASE_FD) or type "
                             "it when asked")
    if settings_file.exists() or settings_file.is_symlink():
        try:
            saved = json.loads(settings_file.read_text())
            salt, check = bytes.fromhex(saved["salt"]), bytes.fromhex(saved["check"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise MasterKeyError(f"{settings_file} (the passphrase's salt) is damaged or not a file: restore it "
                                 "from the copy kept with the escrowed passphrase") from None
    else:
        salt, check = os.urandom(16), b""
    derived = Scrypt(salt=salt, length=32, **SCRYPT).derive(passphrase.encode("utf-8"))
    key = master(derived)
    expected = hmac.new(key.key, b"evidence-worker passphrase check", hashlib.sha256).digest()
    if check and not hmac.compare_digest(check, expected):
        raise MasterKeyError("the passphrase is wrong: nothing was read or written")
    if not check:
        # Without this file no passphrase opens anything again: it is made durable before any use.
        _write_new(settings_file, json.dumps({"kdf": "scrypt", **SCRYPT, "salt": salt.hex(),
                                              "check": expected.hex()}).encode("ascii"))
    return key


def new_kms_key(path: Path, client, kms_key_id: str) -> Path:
    """A new master key made by KMS (GenerateDataKey), kept at ``path`` only as KMS ciphertext."""
    blob = client.generate_data_key(KeyId=kms_key_id, KeySpec="AES_256")["CiphertextBlob"]
    return _write_new(path, blob)


def from_kms(path: Path, client, kms_key_id: str) -> MasterKey:
    """The master key KMS decrypts from ``path``: it exists in clear only in this process's memory."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise MasterKeyError(f"the KMS-wrapped key {path} cannot be read ({exc.strerror})") from None
    try:
        return master(client.decrypt(CiphertextBlob=blob, KeyId=kms_key_id)["Plaintext"])
    except Exception as exc:  # noqa: BLE001 - botocore: access denied, disabled key, no network
        raise MasterKeyError(f"KMS key {kms_key_id} would not decrypt the storage key: {exc}") from None


def storage_name(naming_key: bytes, evidence_id: str) -> str:
    """The name an item has in an encrypted store: HMAC-SHA256 of its evidence id under the store's naming key."""
    return hmac.new(naming_key, evidence_id.encode("ascii"), hashlib.sha256).hexdigest()
