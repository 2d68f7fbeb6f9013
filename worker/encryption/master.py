"""Which master key this worker holds: the [encryption] settings, loaded and checked at start.

A missing key file, a wrong passphrase or a KMS key that will not decrypt
stops the command with the reason before anything is read or written.
Losing the key loses what it encrypted: keep a copy of the key file (or the
passphrase, or the KMS key) in escrow, apart from the machines.
"""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable

from worker import aws
from worker.config import ENV_PASSPHRASE, ENV_PASSPHRASE_FD, Settings
from worker.encryption import keys
from worker.encryption.envelope import MasterKey
from worker.errors import ConfigError

PASSPHRASE_SALT = "passphrase.json"   # in <home>: the scrypt salt and a check value, never the key


def on_demand(settings: Settings) -> Callable[[], MasterKey | None]:
    """The master key of one command, for its composition root to hand down: loaded the first time it is
    asked for and the same key after, so a passphrase is typed once, and never by a command that opens no
    store (status, verify, config)."""
    return functools.cache(functools.partial(load, settings))


@functools.lru_cache(maxsize=1)   # a descriptor is read once, and closed
def _given_passphrase() -> str | None:
    """The passphrase a service was given: EVIDENCE_PASSPHRASE, or read (one line) from the open file
    descriptor EVIDENCE_PASSPHRASE_FD names (a systemd credential, a pipe); None if neither is set."""
    if ENV_PASSPHRASE in os.environ:
        return os.environ[ENV_PASSPHRASE]
    fd = os.environ.get(ENV_PASSPHRASE_FD)
    if fd is None:
        return None
    if not fd.isdigit():
        raise ConfigError(f"{ENV_PASSPHRASE_FD} must be the number of an open file descriptor, not {fd!r}")
    try:
        with os.fdopen(int(fd), "r", encoding="utf-8", closefd=True) as handle:
            return handle.readline(4096).rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{ENV_PASSPHRASE_FD}={fd}: the passphrase cannot be read ({exc.strerror})") from None


def load(settings: Settings) -> MasterKey | None:
    """The master key the [encryption] settings name, or None when encryption is off."""
    e = settings.encryption
    try:
        if e.key_source == "none":
            return None
        if e.key_source == "file":
            if not e.key_file:
                raise ConfigError("[encryption] key_source = \"file\" needs key_file")
            return keys.from_key_file(e.key_file)
        if e.key_source == "passphrase":
            salt = settings.home / PASSPHRASE_SALT
            phrase = _given_passphrase()
            if phrase is None and os.isatty(0):
                phrase = getpass.getpass("evidence storage passphrase: ")
                if not salt.exists() and getpass.getpass("the same again (first use): ") != phrase:
                    raise ConfigError("[encryption]: the two passphrases differ; nothing was set up")
            settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            return keys.from_passphrase(phrase or "", salt)
        if not (e.key_file and e.kms_key_id):
            raise ConfigError("[encryption] key_source = \"kms\" needs key_file (the KMS-wrapped key) and kms_key_id")

        return keys.from_kms(e.key_file, aws.client("kms", region=e.kms_region, endpoint_url=e.kms_endpoint_url),
                             e.kms_key_id)
    except keys.MasterKeyError as exc:
        raise ConfigError(f"[encryption]: {exc}") from None
