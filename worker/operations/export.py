"""Handing a clip to a prosecutor: cut, signed, re-verified, explained, and logged in custody.

The clip comes from a run's masked video, which is fetched from the store
and checked against its run record and its own signature before anything
is cut. The clip is signed with that video as its parent, so its manifest
store carries the whole way back to the original. Only after the clip
verifies is the folder written, and the export logged in custody naming
the recipient. An unmasked export is possible only with a named person's
authorisation and a reason, both logged before any work starts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from models.registry import file_sha256
from pipelines.export import clip, excerpt, report
from pipelines.export import custody as custody_page
from pipelines.pipeline import Tools
from pipelines.provenance import manifest
from pipelines.provenance.credentials import Credentials
from pipelines.provenance.step import SOFTWARE
from pipelines.provenance.verify import verify
from pipelines.transcribe import formats
from worker.config import ReleaseSettings
from worker.errors import ConfigError, IntegrityError, JobError, NotFound
from worker.fs.directory import Directory
from worker.fs.workdirs import private_workdir
from worker.labels import check_label
from worker.operations import release
from worker.operations.custody_report import custody_report
from worker.record import custody, stamps, verified
from worker.record.stamps import stamp_custody
from worker.record.store import EvidenceStore
from worker.record.timestamps import utc_now

log = logging.getLogger("evidence.export")

MASKED = "redacted.mp4"
ANCHOR = "trust-anchor.pem"


class ExportRefused(JobError):
    """An export that must not be made as asked (unmasked without authorisation, a source that fails its checks)."""


@dataclass(frozen=True)
class Request:
    evidence_id: str
    start: float
    end: float
    recipient: str
    out: Path
    run_id: str | None = None
    unredacted: bool = False
    authorised_by: str | None = None
    reason: str | None = None


def _check_request(request: Request) -> None:
    if not request.recipient.strip():
        raise ValueError("--recipient must name who receives the clip")
    for what, text in (("--recipient", request.recipient), ("--authorised-by", request.authorised_by),
                       ("--reason", request.reason)):
        check_label(what, text or "")
    if request.unredacted and not ((request.authorised_by or "").strip() and (request.reason or "").strip()):
        raise ExportRefused("an unmasked export needs --authorised-by NAME and --reason TEXT; both are logged "
                            "in the item's custody")
    if request.out.is_symlink() or (request.out.exists() and (not request.out.is_dir() or any(request.out.iterdir()))):
        raise ValueError(f"{request.out} exists and is not an empty folder: name a new folder for the export")


def _source_run(request: Request, runs: verified.Runs, chain: custody.ChainReport,
                floor: ReleaseSettings) -> Mapping[str, Any] | None:
    """The verified run to cut from: the one asked for, else the newest releasable one with a masked video.

    ExportRefused, with the reasons, when a masked clip is asked for and the
    run (the one named, or every run with a masked video) is not releasable.
    """
    if request.run_id:
        chosen = [r for r in runs.records if r["run_id"] == request.run_id]
        if not chosen:
            problem = runs.problems.get(request.run_id, "no committed run with that id")
            raise NotFound(f"run {request.run_id} of {request.evidence_id[:12]}: {problem}")
        masked = chosen if MASKED in (chosen[0].get("outputs") or {}) else []
    else:
        masked = [r for r in runs.records if MASKED in (r.get("outputs") or {})]
    if request.unredacted or not masked:
        return masked[-1] if masked else (runs.records[-1] if runs.records else None)
    reasons = {r["run_id"]: release.problems(r, chain, floor) for r in masked}
    releasable = [r for r in masked if not reasons[r["run_id"]]]
    if releasable:
        return releasable[-1]
    newest = masked[-1]["run_id"]
    raise ExportRefused(f"run {newest} of {request.evidence_id[:12]} may not be released: "
                        f"{'; '.join(reasons[newest])}" + ("" if request.run_id else
                                                            f" (nor may any of its {len(masked)} masked runs)")
                        + "; reprocess it with settings that meet [release]")


def _transcript(store: EvidenceStore, evidence_id: str, runs: verified.Runs,
                preferred: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    candidates = ([preferred] if preferred else []) + list(reversed(runs.records))
    for record in candidates:
        if "transcript.json" in (record.get("outputs") or {}):
            return json.loads(verified.output(store, evidence_id, record, "transcript.json"))["segments"]
    return None


def _review_moments(store: EvidenceStore, evidence_id: str, run: Mapping[str, Any], span: clip.Range) -> list[dict]:
    """The masking's moments a person should check that fall in the clip, re-timed to it."""
    if "redaction-report.json" not in (run.get("outputs") or {}):
        return []
    masking = json.loads(verified.output(store, evidence_id, run, "redaction-report.json"))
    return [{"start_s": round(max(m["start_s"], span.start) - span.start, 3),
             "end_s": round(min(m["end_s"], span.end) - span.start, 3), "reasons": m.get("reasons", [])}
            for m in masking.get("review") or [] if m["end_s"] > span.start and m["start_s"] < span.end]


def _how_to_verify(clip_name: str) -> list[dict[str, str]]:
    return [
        {"what": "Check that the trust anchor is the exporting organisation's: the fingerprint printed must be the "
                 "one it published or gave you separately (and the one in this report):",
         "command": f"openssl x509 -in {ANCHOR} -noout -fingerprint -sha256"},
        {"what": "Check that no file in this folder has changed (Linux, macOS: shasum -a 256 -c SHA256SUMS):",
         "command": "sha256sum -c SHA256SUMS"},
        {"what": "Check the clip's signature and its chain back to the original with C2PA Tool "
                 "(https://github.com/contentauth/c2pa-rs, the command-line tool of the C2PA project):",
         "command": f"c2patool {clip_name} trust --trust_anchors {ANCHOR}"},
        {"what": "Or with the C2PA project's Python library (pip install c2pa-python); validation_state must be "
                 "Trusted:",
         "command": "python3 -c \"import c2pa, json; c = c2pa.Context.from_json(json.dumps({'verify': "
                    "{'remote_manifest_fetch': False}, 'trust': {'user_anchors': open('" + ANCHOR + "').read()}})); "
                    "r = c2pa.Reader('" + clip_name + "', context=c); "
                    "print(r.get_validation_state()); print(r.json())\""},
        {"what": "Or with this software, which also walks the chain to the original and names each check:",
         "command": f"evidence verify {clip_name} --trust-anchors {ANCHOR}"},
        {"what": "Whoever holds the original can compare it with the SHA-256 named in this report:",
         "command": "sha256sum ORIGINAL-FILE"},
    ]


def export(store: EvidenceStore, request: Request, *, credentials: Credentials, anchors_pem: str | None,
           tools: Tools, work_root: Path, actor: str, floor: ReleaseSettings) -> dict[str, Any]:
    """Make the export folder; return the report's facts (also written as verification-report.json)."""
    _check_request(request)
    if not anchors_pem:
        raise ConfigError("export needs the trust anchor a recipient checks the signature with: set [signing] "
                          "trust_anchors")
    evidence_id = request.evidence_id
    record = store.evidence(evidence_id)
    chain = store.custody(evidence_id)
    _check_item(store, evidence_id, record, chain)
    runs = verified.runs(store, evidence_id, chain)
    run = _source_run(request, runs, chain, floor)
    masked = run is not None and MASKED in (run.get("outputs") or {})
    if not request.unredacted and not masked:
        raise ExportRefused(f"item {evidence_id[:12]} has no masked video" + (f" in run {run['run_id']}" if run else "")
                            + ": exporting the unmasked original needs --unredacted --authorised-by NAME "
                              "--reason TEXT")
    probe = ((run or {}).get("facts") or {}).get("probe") or {}
    if probe and not probe.get("video"):
        raise ExportRefused(f"item {evidence_id[:12]} is an audio recording; exporting audio clips is not "
                            "supported yet")
    if request.unredacted:
        store.append_custody(evidence_id, custody.UNREDACTED_EXPORT_AUTHORISED, actor,
                             {"authorised_by": request.authorised_by, "reason": request.reason,
                              "recipient": request.recipient, "from": clip.clock(request.start),
                              "to": clip.clock(request.end)})
    try:
        facts, report_sha = _make(store, request, record, chain, runs, run, credentials=credentials,
                                  anchors_pem=anchors_pem, tools=tools, work_root=work_root, actor=actor)
    except BaseException as exc:
        if request.unredacted:  # the authorisation is in custody; so is what became of it
            store.append_custody(evidence_id, custody.EXPORT_FAILED, actor,
                                 {"recipient": request.recipient, "reason": str(exc) or type(exc).__name__})
        raise
    store.append_custody(evidence_id, custody.EXPORTED, actor, {
        "recipient": request.recipient, "run_id": facts["source"]["run_id"], "from": facts["clip"]["from"],
        "to": facts["clip"]["to"], "clip_sha256": facts["clip"]["sha256"],
        "faces_masked": facts["source"]["faces_masked"],
        "authorised_by": request.authorised_by if request.unredacted else None,
        "trust_anchor_sha256": facts["trust_anchor_sha256"], "report_sha256": report_sha,
    })
    stamp_custody(store, evidence_id, credentials.timestamp_url)   # the export, vouched for by an outside clock
    log.info("exported", extra={"evidence_id": evidence_id, "clip_sha256": facts["clip"]["sha256"],
                                "faces_masked": facts["source"]["faces_masked"]})
    return facts


def _check_item(store: EvidenceStore, evidence_id: str, record: Mapping[str, Any], chain: custody.ChainReport) -> None:
    """Nothing leaves for a court from an item whose custody or intake record fails its checks (the
    original is re-hashed where the export reads it, or on its own when the clip comes from the masked video)."""
    problems = ([f"custody: {'; '.join(chain.problems)}"] if not chain.ok else []) + \
        verified.intake_problems(record, chain)
    if problems:
        raise IntegrityError(f"item {evidence_id[:12]} fails its checks ({'; '.join(problems)}); nothing is "
                             "exported: run 'evidence audit' and have a person look")


def _make(store: EvidenceStore, request: Request, record: Mapping[str, Any], chain: custody.ChainReport,
          runs: verified.Runs, run: Mapping[str, Any] | None, *, credentials: Credentials, anchors_pem: str,
          tools: Tools, work_root: Path, actor: str) -> tuple[dict[str, Any], str]:
    """The export folder, written; (the report's facts, the SHA-256 of verification-report.json)."""
    evidence_id = request.evidence_id
    ingested = next((e for e in chain.events if e.get("event") == custody.INGESTED), {"ts": record.get("ingested_at")})
    with private_workdir(work_root, "export") as work:
        if request.unredacted:
            source = store.original_for_run(evidence_id, work)   # re-hashed on the way
            source_sha256 = evidence_id
            parent_title, parent_mime = f"original {evidence_id[:12]}", None
        else:
            store.verify_original(evidence_id)
            source_sha256 = expected = run["outputs"][MASKED]["sha256"]
            source = store.fetch_output(evidence_id, run["run_id"], MASKED, work / MASKED, expected_sha256=expected)
            checked = verify(source, anchors_pem)
            if not checked["ok"] or checked["original_sha256"] != evidence_id:
                failing = [c for c in checked["checks"] if not c["ok"]]
                failed = "; ".join(f"{c['name']}: {c['detail']}" for c in failing)
                # Only the trust failing is what a home that lost its signing folder sees (a restore, a move).
                fix = ("; it was signed by a CA this home does not trust: 'evidence restore' from a replica puts "
                       "the signing set back, or put the old home's signing/ folder back, or set [signing] "
                       "trust_anchors to the CA that signed it" if [c["name"] for c in failing] == ["signer trusted"]
                       else "")
                raise IntegrityError(f"the masked video of run {run['run_id']} fails its own verification "
                                     f"({failed or 'it names another original'}){fix}; nothing was exported")
            parent_title, parent_mime = MASKED, manifest.MIME
        span = clip.check_range(request.start, request.end, clip.duration(source, tools))
        params = (run or {}).get("params") or {}
        cut = work / "cut.mp4"
        clip.cut(source, cut, span, tools, crf=int(params.get("redact.crf", 18)),
                 preset=str(params.get("redact.preset", "veryfast")))

        files: dict[str, Path] = {}
        segments = _transcript(store, evidence_id, runs, run)
        if segments is not None:
            part = excerpt.excerpt(segments, span)
            files["transcript.vtt"] = work / "transcript.vtt"
            files["transcript.txt"] = work / "transcript.txt"
            files["transcript.vtt"].write_text(formats.vtt(part), encoding="utf-8")
            files["transcript.txt"].write_text(formats.text(part, "[no speech in this clip]"), encoding="utf-8")
        exported_at = utc_now()
        evidence = {
            "evidence_id": evidence_id, "original_sha256": evidence_id, "original_size": str(record.get("size")),
            "source": "original" if request.unredacted else f"{MASKED} of run {run['run_id']}",
            "source_sha256": source_sha256, "from": clip.clock(span.start), "to": clip.clock(span.end),
            "recipient": request.recipient, "exported_by": actor, "exported_at": exported_at,
            "faces_masked": not request.unredacted, "transcript_excerpt": _sums(files),
            "signed_with_test_ca": credentials.test,
        }
        actions = [
            {"action": "c2pa.edited", "description": f"cut from {clip.clock(span.start)} to {clip.clock(span.end)}",
             "parameters": {"from": clip.clock(span.start), "to": clip.clock(span.end)}},
            {"action": "c2pa.transcoded", "description": "re-encoded to H.264/AAC in MP4, frame-accurate, "
                                                         "metadata removed"},
        ]
        files["clip.mp4"] = work / "clip.mp4"
        parent = manifest.parent_ingredient(parent_title, parent_mime, "source")
        manifest.sign(cut, files["clip.mp4"], manifest.manifest("clip.mp4", SOFTWARE, actions, evidence, parent),
                      credentials, signed_parent=None if request.unredacted else source)
        checked = verify(files["clip.mp4"], anchors_pem)
        anchor = work / ANCHOR
        anchor.write_text(anchors_pem, encoding="ascii")
        files[ANCHOR] = anchor

        sums = {**evidence["transcript_excerpt"], **_sums({name: files[name] for name in ("clip.mp4", ANCHOR)})}
        facts = {
            "clip": {"file": "clip.mp4", "sha256": sums["clip.mp4"], "size": files["clip.mp4"].stat().st_size,
                     "from": clip.clock(span.start), "to": clip.clock(span.end),
                     "duration_s": round(span.duration, 3)},
            "source": {"output": "original" if request.unredacted else MASKED,
                       "run_id": None if request.unredacted else run["run_id"],
                       "sha256": evidence["source_sha256"], "faces_masked": not request.unredacted,
                       "description": ("the unmasked original" if request.unredacted else
                                       f"the masked video of processing run {run['run_id']}")},
            "original": {"sha256": evidence_id, "size": record.get("size"), "ingested_at": ingested.get("ts"),
                         "case": record.get("case")},
            "export": {"at": exported_at, "by": actor, "recipient": request.recipient,
                       "unredacted": ({"authorised_by": request.authorised_by, "reason": request.reason}
                                      if request.unredacted else None)},
            "verification": {key: checked[key] for key in ("ok", "trust", "original_sha256", "checks", "chain")},
            "masking_review": [] if request.unredacted else _review_moments(store, evidence_id, run, span),
            "transcript": ({"segments": len(part), **formats.made_by(part),
                            "models": sorted({str(s["model"]) for s in part if s.get("model")}),
                            "notice": formats.NOTICE} if segments is not None else None),
            "trust_anchor": ANCHOR,
            "trust_anchor_sha256": anchor_fingerprints(anchors_pem),
            "test_ca": credentials.test,
            "files": sums,
            "how_to_verify": _how_to_verify("clip.mp4"),
            "software": SOFTWARE,
        }
        if not checked["ok"]:
            failed = "; ".join(f"{c['name']}: {c['detail']}" for c in checked["checks"] if not c["ok"])
            raise IntegrityError(f"the signed clip fails verification ({failed}); nothing was exported")
        # The chain of custody up to this export, whose own event is logged next. Read again, not reused from
        # the start: an unredacted export's authorisation, logged since, belongs in it.
        trail = custody_report(store, evidence_id, stamps.roots_from(anchors_pem))
        if not trail["chain_ok"]:
            raise IntegrityError(f"the custody log fails its checks ({'; '.join(trail['problems'])}); nothing "
                                 "was exported")
        documents = {"verification-report.html": report.render_html(facts).encode("utf-8"),
                     "verification-report.json": report.render_json(facts).encode("utf-8"),
                     "custody-report.html": custody_page.render_html(trail).encode("utf-8"),
                     "custody-report.json": custody_page.render_json(trail).encode("utf-8")}
        _write_folder(request.out, files, sums, documents)
    return facts, hashlib.sha256(documents["verification-report.json"]).hexdigest()


def anchor_fingerprints(anchors_pem: str) -> list[str]:
    """SHA-256 fingerprints of the anchor certificates, as ``openssl x509 -fingerprint -sha256`` prints them."""
    return [":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
            for cert in x509.load_pem_x509_certificates(anchors_pem.encode())]


def _sums(files: Mapping[str, Path]) -> dict[str, str]:
    return {name: file_sha256(path) for name, path in files.items()}


def _write_folder(out: Path, files: Mapping[str, Path], sums: Mapping[str, str],
                  documents: Mapping[str, bytes]) -> None:
    """The folder is filled under a hidden name beside ``out`` and renamed into place: a reader never sees
    half an export. Every file owner-only, created new, no link followed; SHA256SUMS last."""
    out = Path(os.path.abspath(out))
    with Directory.open(out.parent, create=True) as parent:
        partial = f".{out.name}.partial-{secrets.token_hex(6)}"
        try:
            with parent.child(partial, create=True) as folder:
                listed = []
                for name, path in files.items():
                    with open(path, "rb") as reading, folder.open_file(name, "wb") as writing:
                        shutil.copyfileobj(reading, writing, 1 << 20)
                        writing.flush()
                        os.fsync(writing.fileno())
                    listed.append((sums[name], name))
                for name, data in documents.items():
                    with folder.open_file(name, "wb") as writing:
                        writing.write(data)
                        writing.flush()
                        os.fsync(writing.fileno())
                    listed.append((hashlib.sha256(data).hexdigest(), name))
                with folder.open_file("SHA256SUMS", "wb") as writing:
                    writing.write("".join(f"{sha}  {name}\n" for sha, name in sorted(listed, key=lambda s: s[1]))
                                  .encode())
                    writing.flush()
                    os.fsync(writing.fileno())
                folder.fsync()
            try:
                os.rename(partial, out.name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    raise ValueError(f"{out} is taken (not an empty folder): name a new folder for the export") \
                        from None
                raise
            parent.fsync()
        finally:
            if parent.exists(partial):
                parent.remove_tree(partial)
