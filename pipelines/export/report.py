"""The verification report that travels with an exported clip, for a lawyer and for a machine
(one self-contained page: pipelines.export.page)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.export.page import document
from pipelines.export.page import e as _e
from pipelines.export.page import row as _row
from pipelines.provenance.verify import NOT_BOUND

SCHEMA = "evidence-worker/export/1"

_ACTIONS = {"c2pa.opened": "opened", "c2pa.edited": "edited", "c2pa.transcoded": "re-encoded",
            "c2pa.created": "created", "c2pa.redacted": "assertion removed"}


def summary(facts: Mapping[str, Any]) -> str:
    """What the clip is, in one paragraph of plain words."""
    clip, original, source = facts["clip"], facts["original"], facts["source"]
    masked = ("The faces of people in it were masked before the clip was cut; the masks cannot be removed "
              "from this file." if source["faces_masked"] else
              "FACES ARE NOT MASKED in this clip: it was cut from the unmasked original, with the "
              "authorisation recorded below.")
    case = f" for case {original['case']}" if original.get("case") else ""
    return (f"This file, {clip['file']}, is a {clip['duration_s']:g}-second excerpt (from {clip['from']} to "
            f"{clip['to']}) of a recording that has been preserved unchanged since {original['ingested_at']}"
            f"{case}. {masked} The clip carries a digital signature (a C2PA manifest) that records where it "
            "comes from and what was done to it; any change to the picture or the sound after signing breaks "
            "that signature.")


def _processing(chain: list[Mapping[str, Any]]) -> str:
    items = []
    for link in reversed(chain):   # oldest first: the original, then each derivative
        steps = [f"{_ACTIONS.get(a.get('action'), a.get('action'))}"
                 + (f": {a['description']}" if a.get("description") else "")
                 for a in link.get("actions") or [] if a.get("action") != "c2pa.opened"]
        done = "; ".join(steps) or "opened"
        trust = "a trusted signer" if link.get("trusted") else "a signer NOT trusted by the anchor"
        stamp = link.get("stamp") or {}
        when = (f"Time-stamped {stamp['time']} by {stamp.get('authority')}: the signature is checked at that "
                "time, so it still verifies after the certificate expires." if stamp.get("time") else
                "Not time-stamped: the signature verifies only while the signing certificate is valid (until "
                f"{stamp.get('certificate_valid_until')}).")
        items.append(f"<li><strong>{_e(link.get('title'))}</strong>, made from {_e(link.get('parent'))}: "
                     f"{_e(done)}. Signed by {_e(link.get('signer'))} (issuer {_e(link.get('issuer'))}), "
                     f"{_e(trust)}. {_e(when)}</li>")
    return "<ol>" + "".join(items) + "</ol>"


def render_html(facts: Mapping[str, Any]) -> str:
    clip, original, exported = facts["clip"], facts["original"], facts["export"]
    check = facts["verification"]
    ok = check["ok"]
    verdict = ("VERIFIED when exported: every check below passed." if ok
               else "NOT VERIFIED: at least one check below failed. Do not rely on this clip.")
    warnings = []
    if facts.get("test_ca"):
        warnings.append("Signed with a TEST certificate authority, not for production: the signature shows the "
                        "file is unchanged, but the signer's identity is not vouched for.")
    if exported.get("unredacted"):
        u = exported["unredacted"]
        warnings.append(f"UNREDACTED: faces are not masked. Authorised by {u['authorised_by']}; "
                        f"reason: {u['reason']}.")
    review = facts.get("masking_review") or []
    if review:
        reasons = sorted({reason for moment in review for reason in moment["reasons"]})
        warnings.append(f"{len(review)} moment(s) of this clip were marked by the face masking for a person to check "
                        f"({'; '.join(reasons)}): look at them before relying on the masking.")
    checks = "".join(
        f"<tr><th>{_e(c['name'])}</th><td class=\"{'ok' if c['ok'] else 'fail'}\">"
        f"{'&#10003; passed' if c['ok'] else '&#10007; FAILED'}</td><td class=\"hash\">{_e(c['detail'])}</td></tr>"
        for c in check["checks"])
    commands = "".join(f"<li>{_e(step['what'])}<pre>{_e(step['command'])}</pre></li>"
                       for step in facts["how_to_verify"])
    files = "".join(_row(name, sha, mono=True) for name, sha in sorted(facts["files"].items()))
    transcript = facts.get("transcript")
    words = ("No transcript excerpt (the run has no transcript)." if not transcript else
             f"{transcript['segments']} transcript segment(s) fall in the clip: {transcript['machine']} written by a "
             f"machine ({', '.join(transcript['models']) or 'no model'}), {transcript['human']} checked by a person, "
             f"{transcript['needs_human']} marked as needing a human transcriber. Machine-made text is an automatic "
             "transcription, unverified until a person checks it against the recording: it can hold wrong words, "
             "names and numbers. In transcript.txt and transcript.vtt, everything in square brackets is a note, "
             "not speech, and each line's note says who made it.")
    return document(f"Verification report: {clip['file']}", f"""<h1>Verification report</h1>
<p>Video clip <code>{_e(clip['file'])}</code>, exported {_e(exported['at'])}</p>
<p class="verdict {'ok' if ok else 'fail'}">{_e(verdict)}</p>
{''.join(f'<p class="warning">{_e(w)}</p>' for w in warnings)}
<h2>What this clip is</h2>
<p>{_e(summary(facts))}</p>
<table>
{_row("Clip file", clip["file"])}
{_row("Clip SHA-256", clip["sha256"], mono=True)}
{_row("Clip range in the source", f"{clip['from']} to {clip['to']} ({clip['duration_s']:g} s)")}
{_row("Cut from", facts["source"]["description"])}
{_row("Original SHA-256", original["sha256"], mono=True)}
{_row("Original size", f"{original['size']} bytes")}
{_row("Original preserved since", original["ingested_at"])}
{_row("Case", original.get("case") or "not recorded")}
</table>
<h2>What was done to it</h2>
{_processing(check.get("chain") or [])}
<p>{_e(words)}</p>
<h2>Checks made when it was exported</h2>
<table><tr><th>Check</th><th>Result</th><th>Detail</th></tr>{checks}</table>
<p>Trust: <strong>{_e(check['trust'])}</strong>. The signature was checked offline against the trust anchor
included in this folder (<code>{_e(facts['trust_anchor'])}</code>), whose SHA-256 fingerprint is:</p>
<p class="hash">{'<br>'.join(_e(f) for f in facts['trust_anchor_sha256'])}</p>
<p>A certificate that travels with the clip proves nothing by itself: compare this fingerprint with the one
the exporting organisation published or gave you separately (step 1 below).</p>
<h2>Who exported it, to whom</h2>
<table>
{_row("Exported by", exported["by"])}
{_row("Exported to", exported["recipient"])}
{_row("Exported at (UTC)", exported["at"])}
{_row("Custody record", "this export is logged in the original's hash-chained custody log")}
</table>
<h2>How to check it yourself</h2>
<p>None of these needs a network connection or this organisation's servers.</p>
<ol>{commands}</ol>
<h2>Files in this folder</h2>
<table>{files}</table>
<p>This report and its JSON twin (verification-report.json) are listed with every other file in SHA256SUMS.
SHA256SUMS is the exact-bytes check: {_e(NOT_BOUND)}.</p>
<p><small>Made by {_e(facts['software']['name'])} {_e(facts['software']['version'])}.</small></p>""")


def render_json(facts: Mapping[str, Any]) -> str:
    return json.dumps({"schema": SCHEMA, **facts}, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
