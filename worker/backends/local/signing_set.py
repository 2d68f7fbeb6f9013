"""A local store's signing set: the files a restored home needs to verify and sign as before, each
write-once in ``<store>/signing/``, sealed when the store is. A part of LocalStore (its base class)."""

from __future__ import annotations

from worker.backends.layout import SIGNING, signing_context
from worker.errors import EvidenceError


class LocalSigningSet:
    """The signing-set half of LocalStore."""

    def keep_signing_file(self, name: str, data: bytes) -> bool:
        with self._root.child(SIGNING, create=True) as folder:
            return folder.write_once(name, self.sealing.seal_bytes(data, signing_context(name)))

    def signing_files(self) -> dict[str, bytes]:
        if not self._root.is_dir(SIGNING):
            return {}
        found = {}
        with self._root.child(SIGNING) as folder:
            for name in folder.names():
                try:
                    found[name] = self.sealing.open_bytes(folder.read_bytes(name), signing_context(name))
                except (EvidenceError, OSError):
                    continue   # planted (a link, a FIFO), damaged: never trusted, and the rest still restores
        return found
