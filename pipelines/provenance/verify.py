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
import os
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


def _manifests(reader: c2pa.Reader) -> dict[str, dict[str, Any]]:
    """Each manifest as the CBOR-faithful view gives it (the JSON view mangles arrays of numbers, and leaves
    out the time-stamp)."""
    manifests = json.loads(reader.crjson()).get("manifests") or []
    entries = manifests if isinstance(manifests, list) else list(manifests.values())
    return {str(entry.get("label")): entry for entry in entries if isinstance(entry, dict)}


def _name(certificate: Any) -> str | None:
    subject = certificate.get("subject") if isinstance(certificate, dict) else None
    if not isinstance(subject, dict):
        return None
    return ", ".join(str(value) for part, value in subject.items() if part in ("CN", "O")) or None


def _stamp(entry: dict[str, Any]) -> dict[str, Any]:
    """When the signature was time-stamped and by which authority, or None for both; and until when the
    signing certificate was valid (what an unstamped signature is checked against: the present)."""
    signature = entry.get("signature") or {}
    stamp = signature.get("timeStampInfo") or {}
    validity = (signature.get("certificateInfo") or {}).get("validity") or {}
    return {"time": stamp.get("timestamp"), "authority": _name(stamp.get("certificateInfo")),
            "certificate_valid_until": validity.get("notAfter")}


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions", []):
                agent = action.get("softwareAgent")
                found.append({"action": action.get("action"), "description": action.get("description"),
                              "software": agent.get("name") if isinstance(agent, dict) else agent})
    return found


def _deltas(deltas: list[dict[str, Any]], label: str) -> list[dict[str, Any]] | None:
    """What the library found when it re-checked, at this reading, the parent of manifest ``label``."""
    found = [d.get("validationDeltas") or {} for d in deltas
             if f"/c2pa/{label}/" in str(d.get("ingredientAssertionURI", ""))]
    return found or None


def _codes(results: list[dict[str, Any]], kind: str) -> list[str]:
    return [str(item.get("code")) for result in results for item in result.get(kind) or []]


def _chain(reader: c2pa.Reader, active_label: str, active_trusted: bool) -> list[dict[str, Any]]:
    """From the file's own manifest back to the first whose parent carries none (the original)."""
    manifests = _manifests(reader)
    deltas = (reader.get_validation_results() or {}).get("ingredientDeltas") or []
    links, label, trusted = [], active_label, active_trusted
    while label and len(links) < _MAX_LINKS and label not in {link["manifest"] for link in links}:
        manifest = reader.get_manifest(label)
        signature = manifest.get("signature_info") or {}
        parents = [i for i in manifest.get("ingredients", []) if i.get("relationship") == "parentOf"]
        parent = parents[0] if len(parents) == 1 else None
        problems = [] if parent else [f"{len(parents)} parent ingredients, not one"]
        parent_trusted = False
        if parent and parent.get("active_manifest"):
            recorded = (parent.get("validation_results") or {}).get("activeManifest") or {}
            now = _deltas(deltas, label)
            problems += [c for c in _codes([recorded], "failure") + _codes(now or [], "failure")
                         if c not in _NOT_BREAKING]
            # What was recorded at signing, judged by the signer's anchors, and what changed at this reading
            # with the reader's (the library reports only differences): trusted if now said so, or if it was
            # then and nothing now says otherwise.
            parent_trusted = "signingCredential.trusted" in _codes(now or [], "success") or (
                "signingCredential.trusted" in _codes([recorded], "success")
                and "signingCredential.untrusted" not in _codes(now or [], "failure"))
        evidence = (manifests.get(label, {}).get("assertions") or {}).get(ASSERTION)
        links.append({"manifest": label, "title": manifest.get("title"), "trusted": trusted,
                      "signer": signature.get("common_name"), "issuer": signature.get("issuer"),
                      "stamp": _stamp(manifests.get(label, {})),
                      "parent": parent.get("title") if parent else None,
                      "evidence": evidence if isinstance(evidence, dict) else None,
                      "actions": _actions(manifest), "problems": sorted(set(problems))})
        label, trusted = (parent.get("active_manifest") if parent else None), parent_trusted
    if label:
        links[-1]["problems"].append("the chain of manifests loops or is deeper than this software follows")
    return links


def _chain_check(links: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The chain holds only if every link is ours, intact, trusted and names the same original."""
    name = "chain reaches the original"
    broken = [f"{link['title']!r}: {', '.join(link['problems'])}" for link in links if link["problems"]]
    if broken:
        return _check(name, False, "broken link: " + "; ".join(broken)), None
    foreign = [repr(link["title"]) for link in links
               if not (link["evidence"] and link["evidence"].get("original_sha256"))]
    if foreign:
        return _check(name, False, f"{', '.join(foreign)} carries no evidence record of this software: the chain "
                      "must run from this file to the original through this software's manifests only"), None
    untrusted = [repr(link["title"]) for link in links[1:] if not link["trusted"]]
    if untrusted:
        return _check(name, False, f"{', '.join(untrusted)} in the chain is not signed by a trusted signer"), None
    claimed = {str(link["evidence"]["original_sha256"]) for link in links}
    claimed |= {str(link["evidence"].get("evidence_id")) for link in links}
    if len(claimed) > 1:
        return _check(name, False, f"the manifests name different originals: {', '.join(sorted(claimed))}"), None
    sha = claimed.pop()
    steps = " <- ".join(repr(link["title"]) for link in links)
    return _check(name, True, f"{steps} <- parent {links[-1]['parent']!r}, original SHA-256 {sha}"), sha


SUMS = "SHA256SUMS"   # an export bundle's list of the exact bytes of each of its files
# What C2PA's hash of an MP4 leaves out, said wherever its result is shown.
NOT_BOUND = ("C2PA's hash of an MP4 leaves out some boxes (free space, the file-type box), so bytes can be "
             "added there without failing it; the file's own SHA-256, compared with the bundle's SHA256SUMS, "
             "checks every byte")


def listed_sha256(sums: Path, name: str) -> str | None:
    """The SHA-256 a ``sha256sum``-style list gives for the file ``name``, or None if it lists none (or the
    list is a link, or unreadable). Only its first MiB is read: a bundle's list is a few lines."""
    try:
        with os.fdopen(os.open(sums, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as handle:
            text = handle.read(2**20).decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        digest, _, listed = line.partition("  ")
        if listed.lstrip("*") == name and len(digest) == 64:
            return digest.lower()
    return None


def verify(path: Path, anchors_pem: str | None = None, original: Path | None = None,
           stored_original: Callable[[str], tuple[bool, str]] | None = None,
           sums: Path | None = None) -> dict[str, Any]:
    """The verification report: ok, trust, file_sha256, original_sha256, checks, actions, chain, signer.

    ``stored_original`` re-checks an original the caller holds, given its
    SHA-256: (found and intact, what was found), or None when it holds none.
    ``sums``: a SHA256SUMS list that names the file (an export bundle's): its
    exact bytes are checked against it, which C2PA's hash does not do.
    """
    report: dict[str, Any] = {"ok": False, "trust": "no_manifest", "file_sha256": None, "original_sha256": None,
                              "checks": [], "actions": [], "chain": [], "signer": None, "not_bound": NOT_BOUND}
    checks = report["checks"]
    try:
        report["file_sha256"] = file_sha256(path)
    except OSError:
        pass   # said by the manifest check below, with the reason
    try:
        with context(anchors_pem) as ctx, open(path, "rb") as stream, c2pa.Reader(MIME, stream, context=ctx) as reader:
            state = reader.get_validation_state()
            results = ((reader.get_validation_results() or {}).get("activeManifest") or {})
            store = json.loads(reader.json())
            active = reader.get_active_manifest()
            links = _chain(reader, str(store.get("active_manifest")), state == "Trusted")
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
    except (KeyError, ValueError, TypeError) as exc:   # a store c2pa reads but whose active manifest is gone
        checks.append(_check("manifest present", False, f"the file's C2PA manifest store is damaged ({exc}); "
                                                         "it cannot be verified"))
        report["trust"] = "invalid"
        return report
    codes = [status.get("code", "") for status in store.get("validation_status", [])]
    checks.append(_check("manifest present", True, f"active manifest {store.get('active_manifest')}"))
    signature = active.get("signature_info") or {}
    report["signer"] = {"common_name": signature.get("common_name"), "issuer": signature.get("issuer"),
                        "time": signature.get("time")}
    # Checked by the library at the stamped time, not now: what lets a signature outlive its certificate.
    report["timestamp"] = {**links[0]["stamp"], "trusted": "timeStamp.trusted" in _codes([results], "success")}
    bad_signature = [c for c in codes if c.startswith(("claimSignature", "signingCredential.invalid",
                                                         "signingCredential.revoked", "signingCredential.expired",
                                                         "timeStamp"))]
    checks.append(_check("signature valid", not bad_signature,
                         "; ".join(bad_signature) or f"signed by {signature.get('common_name')} "
                                                     f"(issuer {signature.get('issuer')})"))
    binding = [c for c in codes if c.startswith("assertion.")]
    checks.append(_check("content unchanged since signing", not binding,
                         "; ".join(binding) or "the media's hash matches the signed hash (C2PA's hash, which "
                                               "leaves out some boxes; the exact bytes: SHA256SUMS)"))
    if sums is not None:
        listed = listed_sha256(sums, path.name)
        if listed is not None:
            checks.append(_check(f"exact bytes as {sums.name} lists", listed == report["file_sha256"],
                                 f"the file hashes to {report['file_sha256']}" +
                                 ("" if listed == report["file_sha256"] else f"; {sums.name} lists {listed}")))
    trusted = state == "Trusted"
    if trusted:
        why = "the signer chains to a given trust anchor"
    elif "signingCredential.expired" in codes:
        why = (f"the signing certificate expired ({report['timestamp']['certificate_valid_until']}) and no "
               "trusted time-stamp shows the signature was made before")
    else:
        why = "no trust anchor given" if not anchors_pem else "the signer does not chain to the given trust anchors"
    checks.append(_check("signer trusted", trusted, why))
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
