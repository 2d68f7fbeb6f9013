"""Checking a signed video offline: manifest, signature, trust, content binding, and the way back to the original.

Each check is reported on its own line with what it found, so a reader
sees which one failed. Nothing is fetched: no remote manifest, no OCSP.

The way back is walked link by link: an exported clip names the masked
video as its parent, whose manifest (carried inside the clip) names the
original. The library does not mark a file invalid when a parent's
manifest is broken, so every link's recorded validation is read here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import c2pa

from models.registry import file_sha256
from pipelines.provenance.manifest import ASSERTION, MIME, context

_MAX_LINKS = 16   # a manifest store that loops or nests deeper than this is not ours
# A parent signed by a key the verifier does not trust is reported on its own line, not as a broken link.
_NOT_BREAKING = {"signingCredential.untrusted", "signingCredential.ocsp.skipped"}


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def _assertions_by_manifest(reader: c2pa.Reader) -> dict[str, dict[str, Any]]:
    """Each manifest's assertions, from the CBOR-faithful view (the JSON view mangles arrays of numbers)."""
    manifests = json.loads(reader.crjson()).get("manifests") or []
    entries = manifests if isinstance(manifests, list) else list(manifests.values())
    return {str(entry.get("label")): entry.get("assertions") or {} for entry in entries if isinstance(entry, dict)}


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions", []):
                agent = action.get("softwareAgent")
                found.append({"action": action.get("action"), "description": action.get("description"),
                              "software": agent.get("name") if isinstance(agent, dict) else agent})
    return found


def _failures(results: Any) -> list[str]:
    active = (results or {}).get("activeManifest") or {}
    return [str(item.get("code")) for item in active.get("failure") or []]


def _delta_failures(deltas: list[dict[str, Any]], label: str) -> list[str]:
    """Failures found when the library re-checked, at this reading, the ingredients of manifest ``label``."""
    codes = []
    for delta in deltas:
        if f"/c2pa/{label}/" in str(delta.get("ingredientAssertionURI", "")):
            codes += [str(item.get("code")) for item in (delta.get("validationDeltas") or {}).get("failure") or []]
    return codes


def _chain(reader: c2pa.Reader, active_label: str) -> list[dict[str, Any]]:
    """From the file's own manifest back to the first manifest whose parent carries none (the original)."""
    assertions = _assertions_by_manifest(reader)
    deltas = (reader.get_validation_results() or {}).get("ingredientDeltas") or []
    links, label = [], active_label
    while label and len(links) < _MAX_LINKS and label not in {link["manifest"] for link in links}:
        manifest = reader.get_manifest(label)
        signature = manifest.get("signature_info") or {}
        parents = [i for i in manifest.get("ingredients", []) if i.get("relationship") == "parentOf"]
        parent = parents[0] if len(parents) == 1 else None
        problems = [] if parent else [f"{len(parents)} parent ingredients, not one"]
        if parent and parent.get("active_manifest"):
            problems += [c for c in _failures(parent.get("validation_results")) + _delta_failures(deltas, label)
                         if c not in _NOT_BREAKING]
        evidence = assertions.get(label, {}).get(ASSERTION)
        links.append({"manifest": label, "title": manifest.get("title"),
                      "signer": signature.get("common_name"), "issuer": signature.get("issuer"),
                      "parent": parent.get("title") if parent else None,
                      "evidence": evidence if isinstance(evidence, dict) else None,
                      "actions": _actions(manifest), "problems": sorted(set(problems))})
        label = parent.get("active_manifest") if parent else None
    if label:
        links[-1]["problems"].append("the chain of manifests loops or is deeper than this software follows")
    return links


def _chain_check(links: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    claimed = {str(link["evidence"]["original_sha256"]) for link in links
               if link["evidence"] and link["evidence"].get("original_sha256")}
    broken = [f"{link['title']!r}: {', '.join(link['problems'])}" for link in links if link["problems"]]
    # The deepest of our manifests names the original; a camera's own manifest may lie beyond it.
    ours = [link for link in links if link["evidence"] and link["evidence"].get("original_sha256")]
    last = ours[-1] if ours else links[-1]
    reaches = bool(ours and last["parent"])
    if broken:
        return _check("chain reaches the original", False, "broken link: " + "; ".join(broken)), None
    if len(claimed) > 1:
        return _check("chain reaches the original", False,
                      f"the manifests name different originals: {', '.join(sorted(claimed))}"), None
    if not reaches:
        return _check("chain reaches the original", False, "no manifest in the chain names the original's SHA-256 "
                      "beside a parent ingredient"), None
    sha = claimed.pop()
    steps = " <- ".join(repr(link["title"]) for link in links[:links.index(last) + 1])
    return _check("chain reaches the original", True,
                  f"{steps} <- parent {last['parent']!r}, original SHA-256 {sha}"), sha


def verify(path: Path, anchors_pem: str | None = None, original: Path | None = None,
           stored_original: Callable[[str], tuple[bool, str]] | None = None) -> dict[str, Any]:
    """The verification report: ok, trust, original_sha256, checks, actions, chain, signer.

    ``stored_original`` re-checks an original the caller holds, given its
    SHA-256: (found and intact, what was found), or None when it holds none.
    """
    report: dict[str, Any] = {"ok": False, "trust": "no_manifest", "original_sha256": None, "checks": [],
                              "actions": [], "chain": [], "signer": None}
    checks = report["checks"]
    try:
        with context(anchors_pem) as ctx, open(path, "rb") as stream, c2pa.Reader(MIME, stream, context=ctx) as reader:
            state = reader.get_validation_state()
            store = json.loads(reader.json())
            active = reader.get_active_manifest()
            links = _chain(reader, str(store.get("active_manifest")))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        checks.append(_check("manifest present", False, f"{path} cannot be opened: {exc.strerror}"))
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
    report["signer"] = {"common_name": signature.get("common_name"), "issuer": signature.get("issuer"),
                        "time": signature.get("time")}
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
    report["actions"] = links[0]["actions"]
    report["chain"] = links
    chain_check, sha = _chain_check(links)
    checks.append(chain_check)
    report["original_sha256"] = sha
    report["evidence"] = links[0]["evidence"]
    if original is not None:
        found = file_sha256(original)
        checks.append(_check("original matches", found == sha,
                             f"{original} hashes to {found}" + ("" if found == sha else f", not {sha}")))
    elif sha and stored_original is not None:
        held = stored_original(sha)
        if held is not None:
            checks.append(_check("original matches", held[0], held[1]))
    report["ok"] = all(c["ok"] for c in checks)
    return report
