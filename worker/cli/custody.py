"""``evidence custody``: an item's chain of custody, shown for a court or acknowledged after damage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.export import custody as custody_page
from worker.backends import open_store
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.config import Settings
from worker.errors import JobError
from worker.fs.directory import Directory
from worker.operations.custody_report import custody_report
from worker.processing import signing
from worker.record import stamps


def register(command) -> None:
    p = command("custody", "an item's chain of custody: show it for a court; acknowledge damage",
                "show ID: every custody event of one item in order (what, when, by which role, its hash),\n"
                "after checking the whole chain; exit 1 when it does not verify. --html FILE also writes it\n"
                "as one self-contained page (no scripts, nothing fetched) that prints for a court file; an\n"
                "export bundle carries the same page as custody-report.html.\n\n"
                "acknowledge ID --reason TEXT: a log whose last event was cut or edited, with no interrupted\n"
                "write of this software to explain it, refuses further events until a person looks at it;\n"
                "this records who looked and why in the chain itself. The damaged bytes are kept as they are.")
    p.add_argument("action", choices=["show", "acknowledge"])
    p.add_argument("evidence_id", metavar="ID", help="evidence id or a unique prefix (6+ hex digits)")
    p.add_argument("--html", type=Path, metavar="FILE", help="show: also write an HTML page (a new file, owner-only)")
    p.add_argument("--reason", help="acknowledge: what was found and why it is acceptable to go on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_custody)


def cmd_custody(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings, args.master_key())
    evidence_id = store.resolve(args.evidence_id)
    if args.action == "acknowledge":
        return _acknowledge(store, evidence_id, settings, args)
    report = custody_report(store, evidence_id, stamps.roots_from(signing.anchors(settings)))
    if args.html is not None:
        try:
            with Directory.open(args.html.parent) as folder, folder.open_file(args.html.name, "wb") as page:
                page.write(custody_page.render_html(report).encode("utf-8"))
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise ValueError(f"--html {args.html}: {exc.strerror} ({exc.filename}); nothing was written") from None
    if args.json:
        print_json(report)
    else:
        for event in report["events"]:
            details = json.dumps(event["details"], ensure_ascii=False, sort_keys=True) if event["details"] else ""
            print(f"{event['seq']:>4}  {event['ts']}  {printable(event['event'])}  by {printable(event['actor'])}  "
                  f"{str(event['hash'])[:16]}  {printable(details)}")
        for stamp in report["stamps"]:
            print(f"      time-stamped: event {stamp['seq']} existed at {stamp['time']} "
                  f"({printable(stamp['authority'])})")
        print(f"chain verifies: {report['count']} events, head {report['head']}" if report["chain_ok"] else
              "CHAIN BROKEN: " + printable("; ".join(report["problems"])))
    return EXIT_OK if report["chain_ok"] else EXIT_PROBLEM


def _acknowledge(store, evidence_id: str, settings: Settings, args: argparse.Namespace) -> int:
    if not (args.reason or "").strip():
        raise JobError("--reason must say what was found")
    event = store.acknowledge_custody_damage(evidence_id, settings.actor, args.reason.strip())
    if args.json:
        print_json(event)
    else:
        kept = "the log was missing; a new chain starts with" if event["details"].get("log_missing") else \
            "the damaged bytes stay in the log, followed by"
        print(f"acknowledged by {printable(settings.actor)}: {kept} this acknowledgement (custody event"
              f" {event['seq']}); events are appended again")
    return EXIT_OK
