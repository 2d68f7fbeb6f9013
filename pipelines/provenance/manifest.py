"""Signing a video with a C2PA manifest: where it comes from, what was done to it, and by what.

The parent ingredient is the preserved original, named and typed but never
pictured: a thumbnail of the original would carry the faces the derivative
masks, so thumbnails are off and none is ever added. The library streams
from file to file; nothing here reads a whole video into memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import c2pa

from pipelines.provenance.credentials import Credentials

ASSERTION = "org.evidence-worker.evidence"   # our own reverse-domain label
MIME = "video/mp4"
_ALGORITHMS = {"ES256": "ES256", "PS256": "PS256", "Ed25519": "ED25519"}


def context(anchors_pem: str | None = None) -> c2pa.Context:
    """Library settings: offline (no remote manifests, no OCSP), no thumbnails, the given trust anchors."""
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
                                "builder": {"thumbnail": {"enabled": False}},
                                "core": {"backing_store_memory_threshold_in_mb": 16}}
    if anchors_pem:
        settings["trust"] = {"user_anchors": anchors_pem}
    return c2pa.Context.from_json(json.dumps(settings))


def manifest(title: str, software: Mapping[str, str], actions: Sequence[Mapping[str, Any]],
             evidence: Mapping[str, Any], parent_label: str = "original") -> dict[str, Any]:
    """The manifest definition: ``actions`` follow the opening of the parent ingredient (``parent_label``)."""
    agent = {"name": software["name"], "version": software["version"]}
    opened = {"action": "c2pa.opened", "parameters": {"ingredientIds": [parent_label]}, "softwareAgent": agent}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [opened, *[{**a, "softwareAgent": agent} for a in actions]]}},
            {"label": ASSERTION, "data": dict(evidence)},
        ],
    }


def sign(source: Path, target: Path, parent: Path, parent_title: str, parent_mime: str | None,
         definition: Mapping[str, Any], credentials: Credentials, parent_label: str = "original") -> None:
    """``source`` with the signed manifest embedded, written to ``target`` (which must not exist).

    A parent that carries its own manifest (a signed derivative) brings it
    along: the new file's manifest store then holds both, and the chain
    back to the original can be walked from the new file alone.
    """
    with context(credentials.anchors_pem) as ctx, c2pa.Builder(dict(definition), context=ctx) as builder:
        with open(parent, "rb") as original:
            builder.add_ingredient({"title": parent_title, "relationship": "parentOf", "label": parent_label},
                                   parent_mime or "application/octet-stream", original)
        signer = c2pa.Signer.from_callback(credentials.sign, getattr(c2pa.C2paSigningAlg,
                                                                     _ALGORITHMS[credentials.algorithm]),
                                           credentials.chain_pem, credentials.timestamp_url)
        with signer, open(source, "rb") as reading, open(target, "xb") as writing:
            builder.sign(signer, MIME, reading, writing)
