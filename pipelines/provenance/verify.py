"""Checking a signed video offline: manifest, signature, trust, content binding, and the way back to the original.

Each check is reported on its own line with what it found, so a reader
sees which one failed. Nothing is fetched: no remote manifest, no OCSP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import c2pa

from models.registry import file_sha256
from pipelines.provenance.manifest import ASSERTION, MIME, context


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def _evidence(reader: c2pa.Reader, label: str) -> dict[str, Any] | None:
    """Our assertion in manifest ``label``, read from the CBOR-faithful view (the JSON view mangles number arrays)."""
    store = json.loads(reader.crjson())
    manifests = store.get("manifests")
    entries = manifests if isinstance(manifests, list) else list((manifests or {}).values())
    for entry in entries:
        if entry.get("label") == label or len(entries) == 1:
            assertions = entry.get("assertions") or {}
            if isinstance(assertions, dict) and ASSERTION in assertions:
                return assertions[ASSERTION]
    return None


def verify(path: Path, anchors_pem: str | None = None, original: Path | None = None) -> dict[str, Any]:
    """The verification report: ok, trust, original_sha256, checks, actions, signer."""
    report: dict[str, Any] = {"ok": False, "trust": "no_manifest", "original_sha256": None, "checks": [],
                              "actions": [], "signer": None}
    checks = report["checks"]
    try:
        with context(anchors_pem) as ctx, open(path, "rb") as stream, c2pa.Reader(MIME, stream, context=ctx) as reader:
            state = reader.get_validation_state()
            store = json.loads(reader.json())
            active = reader.get_active_manifest()
            evidence = _evidence(reader, store.get("active_manifest"))
    except FileNotFoundError:
        checks.append(_check("file", False, f"{path} does not exist"))
        return report
    except c2pa.C2paError as exc:
        text = str(exc)
        missing = "ManifestNotFound" in text or "no JUMBF" in text
        checks.append(_check("manifest present", False, "no C2PA manifest in the file" if missing
                             else f"the file cannot be read as signed MP4: {text}"))
        report["trust"] = "no_manifest" if missing else "invalid"
        return report
    codes = [status.get("code", "") for status in store.get("validation_status", [])]
    checks.append(_check("manifest present", True, f"active manifest {store.get('active_manifest')}"))
    signature = active.get("signature_info") or {}
    report["signer"] = {"common_name": signature.get("common_name"), "issuer": signature.get("issuer")}
    bad_signature = [c for c in codes if c.startswith(("claimSignature", "signingCredential.invalid",
                                                         "signingCredential.revoked", "timeStamp"))]
    checks.append(_check("signature valid", not bad_signature,
                         "; ".join(bad_signature) or f"signed by {signature.get('common_name')} "
                                                     f"(issuer {signature.get('issuer')})"))
    binding = [c for c in codes if c.startswith("assertion.")]
    checks.append(_check("content unchanged since signing", not binding,
                         "; ".join(binding) or "the media's hash matches the signed hash"))
    trusted = state == "Trusted"
    checks.append(_check("signer trusted", trusted, "the signer chains to a given trust anchor" if trusted else
                         ("no trust anchor given" if not anchors_pem else "the signer does not chain to the "
                                                                         "given trust anchors")))
    report["trust"] = "trusted" if trusted else ("invalid" if state == "Invalid" else "untrusted")
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            report["actions"] = [{"action": a.get("action"), "description": a.get("description"),
                                  "software": (a.get("softwareAgent") or {}).get("name") if isinstance(
                                      a.get("softwareAgent"), dict) else a.get("softwareAgent")}
                                 for a in assertion["data"].get("actions", [])]
    parents = [i for i in active.get("ingredients", []) if i.get("relationship") == "parentOf"]
    chain_sha = (evidence or {}).get("original_sha256")
    checks.append(_check("chain reaches the original", bool(parents and chain_sha),
                         f"parent {parents[0].get('title')!r}, original SHA-256 {chain_sha}" if parents and chain_sha
                         else "no parent ingredient with the original's SHA-256"))
    report["original_sha256"] = chain_sha
    report["evidence"] = evidence
    if original is not None:
        found = file_sha256(original)
        checks.append(_check("original matches", found == chain_sha,
                             f"{original} hashes to {found}" + ("" if found == chain_sha else
                                                                f", not {chain_sha}")))
    report["ok"] = all(c["ok"] for c in checks)
    return report
