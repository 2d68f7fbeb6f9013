"""Which credentials this worker signs with: the [signing] settings, or a trial CA made once in the home.

With no [signing] settings the worker still signs (a manifest that says
"test CA, not for production" is better than none), with a CA and signer it
creates under ``<home>/signing`` (0700, keys 0600) the first time. Whatever
is configured is checked when loaded, so bad credentials stop a worker at
its start, not in the middle of a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipelines.provenance import credentials, kms
from worker import aws
from worker.config import Settings
from worker.errors import ConfigError
from worker.fs.directory import Directory

ANCHORS = "anchors"   # in the trial CA's folder: anchors a restore put back (worker.processing.signing_set)


def test_ca_folder(settings: Settings) -> Path:
    return settings.home / "signing"


def _restored_anchors(settings: Settings) -> list[str]:
    folder = test_ca_folder(settings) / ANCHORS
    if not folder.is_dir() or folder.is_symlink():
        return []
    with Directory.open(folder) as anchors:
        return [anchors.read_bytes(name).decode("ascii") for name in anchors.names() if name.endswith(".pem")]


def load(settings: Settings) -> credentials.Credentials:
    s = settings.signing
    try:
        if s.timestamp_url and not s.timestamp_anchors:
            raise ConfigError("[signing] timestamp_url needs timestamp_anchors: the PEM root of that time-stamp "
                              "authority, without which no stamp it gives can be trusted")
        if s.kms_key_id:
            if s.private_key or not s.certificate_chain:
                raise ConfigError("[signing] kms_key_id needs certificate_chain (the certificate issued for the "
                                  "KMS key) and no private_key")
            client = aws.client("kms", region=s.kms_region, endpoint_url=s.kms_endpoint_url)
            made = kms.credentials(s.certificate_chain, s.kms_key_id, client, timestamp_url=s.timestamp_url)
        elif s.certificate_chain or s.private_key:
            if not (s.certificate_chain and s.private_key):
                raise ConfigError("[signing] needs both certificate_chain and private_key")
            made = credentials.from_files(s.certificate_chain, s.private_key, timestamp_url=s.timestamp_url)
        else:
            folder = test_ca_folder(settings)
            paths = credentials.test_ca_paths(folder)
            if not paths["key"].exists():
                paths = credentials.make_test_ca(folder)
            made = credentials.from_files(paths["chain"], paths["key"], timestamp_url=s.timestamp_url)
        return dataclasses.replace(made, anchors_pem=anchors(settings))
    except credentials.CredentialError as exc:
        raise ConfigError(f"[signing]: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"[signing]: cannot read {exc.filename}: {exc.strerror}") from None


def anchors(settings: Settings) -> str | None:
    """The trust anchors signing and 'verify' use when none are given: the configured ones, or the trial
    CA's, and the time-stamp authority's roots (C2PA checks a stamp against the same anchors)."""
    s = settings.signing
    found = []
    if s.trust_anchors:
        found.append(Path(s.trust_anchors).read_text(encoding="ascii"))
    elif not s.certificate_chain and (test_ca_folder(settings) / "ca.pem").exists():
        found.append((test_ca_folder(settings) / "ca.pem").read_text(encoding="ascii"))
    if s.timestamp_anchors:
        found.append(Path(s.timestamp_anchors).read_text(encoding="ascii"))
    found += _restored_anchors(settings)
    return "\n".join(pem.strip() for pem in found) + "\n" if found else None
