"""The chain-of-custody report: every event of one item's log, in order, as a page a court clerk can read
and as JSON for a machine. Pure: it renders what the caller read and verified."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pipelines.export.page import document, e, row

SCHEMA = "evidence-worker/custody-report/1"


def _event(event: Mapping[str, Any]) -> str:
    """One event as its own small table: a page wide enough for every hash, whatever the details hold."""
    details = "".join(
        row(f"  {key}", value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True),
            mono=isinstance(value, str) and len(value) >= 32)
        for key, value in (event.get("details") or {}).items())
    return (f"<h3>{e(event.get('seq'))}. {e(event.get('event'))}</h3><table>"
            f"{row('When (UTC)', event.get('ts'))}{row('By', event.get('actor'))}{details}"
            f"{row('Hash of this event', event.get('hash'), mono=True)}"
            f"{row('Hash of the event before', event.get('prev'), mono=True)}</table>")


def render_html(report: Mapping[str, Any]) -> str:
    original, events = report["original"], report["events"]
    ok = report["chain_ok"]
    verdict = (f"INTACT: all {len(events)} events were checked; each one's hash covers its content and the "
               "hash of the event before it, back to the first." if ok else
               "NOT INTACT: the log fails the checks listed below. Events after the first problem cannot be "
               "relied on as shown.")
    problems = "".join(f'<p class="warning">{e(p)}</p>' for p in report["problems"])
    repairs = "".join(f"<p>{e(r)}</p>" for r in report.get("repairs") or [])
    listed = "".join(_event(event) for event in events)
    stamped = "".join(
        f"<tr><td>{e(stamp.get('seq'))}</td><td>{e(stamp.get('time'))}</td><td>{e(stamp.get('authority'))}</td>"
        f'<td class="hash">{e(stamp.get("hash"))}</td></tr>' for stamp in report.get("stamps") or [])
    stamps = (f"""<p>An outside time-stamp authority (RFC 3161) signed that the log had reached each event below
at the time given: that event, and every event before it, existed then. Events after the last one listed rest
on this software's own clock. The tokens are in the JSON report; <code>openssl ts -verify</code> checks them.</p>
<table><tr><th>Event</th><th>Time-stamped (UTC)</th><th>Authority</th><th>Hash of that event</th></tr>
{stamped}</table>""" if stamped else "<p>No event of this log is time-stamped by an outside authority: every "
              "time shown is this software's own clock.</p>")
    return document(f"Chain of custody: {report['evidence_id']}", f"""<h1>Chain of custody</h1>
<p>Evidence item <code>{e(report['evidence_id'])}</code>; report made {e(report['made_at'])}</p>
<p class="verdict {'ok' if ok else 'fail'}">{e(verdict)}</p>
{problems}{repairs}
<h2>The original</h2>
<table>
{row("Original SHA-256", original.get("sha256"), mono=True)}
{row("Size", f"{original.get('size')} bytes")}
{row("Preserved since (UTC)", original.get("ingested_at"))}
{row("Case", original.get("case") or "not recorded")}
{row("Last event's hash (the head)", report["head"], mono=True)}
</table>
<h2>Time-stamps</h2>
{stamps}
<h2>Every event, in order</h2>
<p>Times are UTC. "By" is the role or pseudonym the software was configured with, never a person's account.
Each event's hash is the SHA-256 of its content with the hash of the event before it: changing, removing or
reordering any event changes every hash after it.</p>
{listed}
<p><small>Made by {e(report['software'])}.</small></p>""")


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps({"schema": SCHEMA, **report}, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
