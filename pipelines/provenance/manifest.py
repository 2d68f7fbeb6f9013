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

from pipelines.errors import ServiceDown
from pipelines.provenance.credentials import Credentials

ASSERTION = "org.evidence-worker.evidence"   # our own reverse-domain label
MIME = "video/mp4"
_ALGORITHMS = {"ES256": "ES256", "PS256": "PS256", "Ed25519": "ED25519"}


class TimestampUnavailable(ServiceDown):
    """The time-stamp authority did not answer: nothing is signed without the stamp that was asked for (a
    signature without one stops verifying when its certificate expires); the job waits for it."""


def context(anchors_pem: str | None = None) -> c2pa.Context:
    """Library settings: offline (no remote manifests, no OCSP), no thumbnails, the given trust anchors."""
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
                                "builder": {"thumbnail": {"enabled": False}},
                                "core": {"backing_store_memory_threshold_in_mb": 16}}
    if anchors_pem:
        settings["trust"] = {"user_anchors": anchors_pem}
    return c2pa.Context.from_json(json.dumps(settings))


def manifest(title: str, software: Mapping[str, str], actions: Sequence[Mapping[str, Any]],
             evidence: Mapping[str, Any], parent: Mapping[str, str]) -> dict[str, Any]:
    """The manifest definition: ``actions`` follow the opening of ``parent`` (see ``parent_ingredient``)."""
    agent = {"name": software["name"], "version": software["version"]}
    opened = {"action": "c2pa.opened", "parameters": {"ingredientIds": [parent["label"]]}, "softwareAgent": agent}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "ingredients": [dict(parent)],
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [opened, *[{**a, "softwareAgent": agent} for a in actions]]}},
            {"label": ASSERTION, "data": dict(evidence)},
        ],
    }


def parent_ingredient(title: str, mime: str | None, label: str = "original") -> dict[str, str]:
    """A parent named and typed, nothing more: none of its bytes, pictures or manifests are read into ours."""
    return {"title": title, "format": mime or "application/octet-stream", "relationship": "parentOf", "label": label}


def sign(source: Path, target: Path, definition: Mapping[str, Any], credentials: Credentials,
         signed_parent: Path | None = None) -> None:
    """``source`` with the signed manifest embedded, written to ``target`` (which must not exist).

    The original is described, never read in: a camera's or editor's own
    manifest in it may hold a preview picture, GPS or a name, and would
    travel on in every derivative. ``signed_parent`` is for a file this
    software signed (the masked video, when a clip is cut from it): its
    manifest comes along, so the clip's store holds both and the chain back
    to the original can be walked from the clip alone.
    """
    definition = dict(definition)
    with context(credentials.anchors_pem) as ctx:
        if signed_parent is not None:
            [parent] = definition.pop("ingredients")
        with c2pa.Builder(definition, context=ctx) as builder:
            if signed_parent is not None:
                with open(signed_parent, "rb") as stream:
                    builder.add_ingredient({k: parent[k] for k in ("title", "relationship", "label")},
                                           parent["format"], stream)
            signer = c2pa.Signer.from_callback(credentials.sign, getattr(c2pa.C2paSigningAlg,
                                                                         _ALGORITHMS[credentials.algorithm]),
                                               credentials.chain_pem, credentials.timestamp_url)
            with signer, open(source, "rb") as reading, open(target, "xb") as writing:
                try:
                    builder.sign(signer, MIME, reading, writing)
                except c2pa.C2paError as exc:
                    Path(target).unlink()   # half a signed file is no file
                    if credentials.timestamp_url and "http" in str(exc).lower():
                        raise TimestampUnavailable(f"the time-stamp authority {credentials.timestamp_url} did "
                                                   f"not answer ({exc}); nothing was signed") from None
                    raise
