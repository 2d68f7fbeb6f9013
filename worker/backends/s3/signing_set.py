"""An S3 store's signing set: the files a restored home needs to verify and sign as before, each
write-once under ``<prefix>/signing/``, sealed when the store is. A part of S3Store (its base class)."""

from __future__ import annotations

from worker.backends.layout import SIGNING, signing_context
from worker.errors import EvidenceError


class S3SigningSet:
    """The signing-set half of S3Store."""

    def keep_signing_file(self, name: str, data: bytes) -> bool:
        return self._put_sealed(self._key(SIGNING, name), data, signing_context(name))

    def signing_files(self) -> dict[str, bytes]:
        prefix, found = self._key(SIGNING) + "/", {}
        for key in self._keys(prefix):
            try:
                found[key[len(prefix):]] = self._get_sealed(key, signing_context(key[len(prefix):]))
            except EvidenceError:
                continue   # planted or damaged: never trusted, and the rest still restores
        return found
