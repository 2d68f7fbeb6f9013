"""The signing set: what a home needs, besides the master key, to verify what it signed and to sign as
before. Every replica keeps it; restore puts it back.

Configured credentials travel as public parts only (the chain, the trust
anchors, the time-stamp authority's roots): their private key is the
operator's, or KMS's. The trial CA travels whole, its key sealed like
everything else in a replica with encryption (plain only where the
originals are plain too). Each file is named by its role and content
hash, so a renewed chain or a new CA is kept beside the old one: what was
signed years ago keeps its anchor.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from pipelines.provenance import credentials
from worker.config import Settings
from worker.fs.directory import Directory
from worker.processing.signing import ANCHORS, test_ca_folder

_TRIAL = {"trial-ca": "ca", "trial-chain": "chain", "trial-key": "key"}   # role -> credentials.test_ca_paths key
_TRUSTED = ("trial-ca", "anchors", "timestamp-anchors")                   # roles that are anchors
_NAME = re.compile(r"^(trial-ca|trial-chain|trial-key|chain|anchors|timestamp-anchors)-[0-9a-f]{16}\.pem$")
_LIMIT = 1024 * 1024   # certificates and a key: a few KiB


def name(role: str, data: bytes) -> str:
    return f"{role}-{hashlib.sha256(data).hexdigest()[:16]}.pem"


def _role(file_name: str) -> str:
    return file_name.rsplit("-", 1)[0]


def _read(path: Path) -> bytes | None:
    """A file of the set, never through a link; None when it is not there."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as handle:
            return handle.read(_LIMIT)
    except FileNotFoundError:
        return None


def keepsakes(settings: Settings) -> dict[str, bytes]:
    """This home's signing set, by the name each file is kept under."""
    s, trial = settings.signing, credentials.test_ca_paths(test_ca_folder(settings))
    sources = [(role, trial[part]) for role, part in _TRIAL.items()]
    sources += [("chain", s.certificate_chain), ("anchors", s.trust_anchors),
                ("timestamp-anchors", s.timestamp_anchors)]
    found = {}
    for role, path in sources:
        data = _read(path) if path else None
        if data:
            found[name(role, data)] = data
    return found


def put_back(files: Mapping[str, bytes], settings: Settings) -> dict[str, Any]:
    """What a replica kept, into this home: every anchor into ``<home>/signing/anchors/`` (trusted beside
    the configured ones by verify and export, so what was signed before still verifies), and the trial CA
    itself when the set holds one and this home has made none (so it signs as the old one did)."""
    genuine = {n: d for n, d in files.items() if _NAME.match(n) and name(_role(n), d) == n}
    restored: dict[str, Any] = {"anchors": [], "trial_ca": False}
    with Directory.open(test_ca_folder(settings), create=True) as folder:
        with folder.child(ANCHORS, create=True) as anchors:
            for file_name, data in sorted(genuine.items()):
                if _role(file_name) in _TRUSTED and _certificates(data) \
                        and anchors.write_once(file_name, data, mode=0o600):
                    restored["anchors"].append(file_name)
        trial = {role: [d for n, d in genuine.items() if _role(n) == role] for role in _TRIAL}
        paths = credentials.test_ca_paths(test_ca_folder(settings))
        if all(len(found) == 1 for found in trial.values()) and not any(folder.exists(p.name) for p in paths.values()):
            for role, part in _TRIAL.items():
                folder.write_once(paths[part].name, trial[role][0], mode=0o600)
            restored["trial_ca"] = True
    return restored


def _certificates(data: bytes) -> bool:
    try:
        return bool(x509.load_pem_x509_certificates(data))
    except ValueError:
        return False
