"""The roster of anonymous staff: their face embeddings under a name, in one owner-only file.

Only embeddings are kept (dlib's 128 numbers a face), never the photos or
videos they came from. The file is ``<home>/staff/roster.json`` (0600 in a
0700 folder, written through a held directory descriptor, never through a
link, replaced whole in one rename). Names stay here: the redact step is
handed the embeddings alone, and nothing it writes can name anyone.

With a master key ([encryption]) the file is sealed (worker.encryption):
on a seized machine it shows neither names nor faces. A plain roster is
then refused (someone who can write the disk could put an empty one in its
place, and enrolled faces would go unmasked), except by ``seal``, the
one-time step after encryption is turned on. The file is not protected
against being rolled back to an older sealed version by someone who can
write the disk; keep the home on an encrypted, access-controlled disk.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from worker.encryption import envelope
from worker.encryption.envelope import MasterKey
from worker.errors import EvidenceError
from worker.fs.directory import Directory

if TYPE_CHECKING:   # numpy costs every command 0.13 s to import; only matching faces needs it
    import numpy as np

SCHEMA = "evidence-worker/staff-roster/1"
_FILE = "roster.json"
_CONTEXT = b"evidence-worker staff roster"


class RosterError(EvidenceError):
    pass


class Roster:
    def __init__(self, home: Path, key: MasterKey | None = None):
        self.folder = Path(home) / "staff"
        self.key = key

    def _read(self, *, plain_allowed: bool = False) -> dict:
        if not self.folder.exists():
            return {"schema": SCHEMA, "staff": {}}
        with Directory.open(self.folder) as folder:
            if not folder.exists(_FILE):
                return {"schema": SCHEMA, "staff": {}}
            raw = folder.read_bytes(_FILE)
        if raw.startswith(envelope.MAGIC):
            if self.key is None:
                raise RosterError(f"{self.folder / _FILE} is encrypted: configure [encryption] to read it")
            plain = io.BytesIO()
            try:
                envelope.unseal(io.BytesIO(raw), plain, self.key, _CONTEXT)
            except envelope.DecryptionError as exc:
                raise RosterError(f"{self.folder / _FILE} cannot be decrypted: {exc}") from None
            raw = plain.getvalue()
        elif self.key is not None and not plain_allowed:
            raise RosterError(f"{self.folder / _FILE} is not encrypted although [encryption] is configured: if "
                              "encryption was just turned on, run 'evidence staff seal' once; otherwise the file "
                              "was replaced, and a person must look")
        data = json.loads(raw)
        if data.get("schema") != SCHEMA:
            raise RosterError(f"{self.folder / _FILE} is not a staff roster of this version")
        return data

    def _write(self, data: dict) -> None:
        plain = json.dumps(data, sort_keys=True).encode("utf-8")
        if self.key is not None:
            sealed = io.BytesIO()
            envelope.seal(io.BytesIO(plain), sealed, self.key, _CONTEXT)
            plain = sealed.getvalue()
        with Directory.open(self.folder, create=True) as folder:
            folder.replace(_FILE, plain)

    def seal(self) -> int:
        """Seal a roster written before encryption was turned on; how many people it holds."""
        if self.key is None:
            raise RosterError("configure [encryption] first: there is no key to seal the roster with")
        data = self._read(plain_allowed=True)
        self._write(data)
        return len(data["staff"])

    def rewrap(self, new: MasterKey) -> None:
        """Seal the roster afresh under ``new`` (a master-key rotation; the roster is small)."""
        Roster(self.folder.parent, new)._write(self._read())

    def names(self) -> dict[str, int]:
        """Each enrolled name with how many face embeddings it has."""
        return {name: len(entry["embeddings"]) for name, entry in sorted(self._read()["staff"].items())}

    def enroll(self, name: str, embeddings: list[np.ndarray]) -> int:
        if not name.strip():
            raise RosterError("a staff member needs a name (or a code name)")
        data = self._read()
        entry = data["staff"].setdefault(name, {"embeddings": [], "enrolled_at": None})
        entry["embeddings"] += [[round(float(x), 6) for x in e] for e in embeddings]
        entry["enrolled_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._write(data)
        return len(entry["embeddings"])

    def remove(self, name: str) -> None:
        data = self._read()
        if name not in data["staff"]:
            raise RosterError(f"nobody named {name!r} is enrolled")
        del data["staff"][name]
        self._write(data)

    def embeddings(self) -> tuple[np.ndarray, ...]:
        """One array of embeddings a person, without names: what the redact step gets."""
        import numpy as np

        return tuple(np.asarray(entry["embeddings"], dtype=np.float32)
                     for _name, entry in sorted(self._read()["staff"].items()))
