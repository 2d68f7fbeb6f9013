"""``evidence export``: a signed clip, its transcript excerpt and a verification report, for a recipient."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.export.clip import RangeError, parse_time
from worker.backends import open_store
from worker.cli.output import EXIT_OK, print_json, printable
from worker.config import Settings
from worker.operations.export import Request, export
from worker.processing import signing


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except RangeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(command) -> None:
    p = command("export", "hand over a verified clip: signed, with transcript excerpt and verification report",
                "Cut --from/--to out of a run's masked video (frame-accurate, re-encoded, metadata removed),\n"
                "sign it with the masked video as its parent (so the chain reaches the original), and write\n"
                "DIR with: clip.mp4, transcript.vtt/.txt (the excerpt, re-timed to the clip, with the same\n"
                "needs-human markers), verification-report.html (for a reader: what the clip is, where it\n"
                "comes from, what was done, who exported it to whom, how to check it offline) and .json,\n"
                "the trust anchor and SHA256SUMS. The export is logged in custody, naming the recipient.\n"
                "Times are from the start of the video: HH:MM:SS or HH:MM:SS.mmm.\n\n"
                "An unmasked clip (cut from the original) is refused unless --unredacted comes with\n"
                "--authorised-by and --reason, which are logged in custody before anything is cut.\n\n"
                "  evidence export 3f2a9c --from 00:01:05 --to 00:02:10.500 --recipient \"Prosecutor X\" --out clip-x")
    p.add_argument("evidence_id", metavar="ID", help="evidence id or a unique prefix (6+ hex digits)")
    p.add_argument("--run", metavar="RUN", help="the run whose masked video to cut (default: the newest)")
    p.add_argument("--from", dest="start", required=True, type=_time, metavar="HH:MM:SS[.mmm]")
    p.add_argument("--to", dest="end", required=True, type=_time, metavar="HH:MM:SS[.mmm]")
    p.add_argument("--recipient", required=True, metavar="NAME", help="who receives the clip (logged)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder")
    p.add_argument("--unredacted", action="store_true", help="cut from the unmasked original (needs authorisation)")
    p.add_argument("--authorised-by", metavar="NAME", help="who authorised an unmasked export")
    p.add_argument("--reason", metavar="TEXT", help="why an unmasked export is needed")
    p.add_argument("--json", action="store_true", help="print the report's facts as JSON")
    p.set_defaults(handler=cmd_export)


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings, args.master_key())
    credentials = signing.load(settings)
    request = Request(evidence_id=store.resolve(args.evidence_id), start=args.start, end=args.end,
                      recipient=args.recipient, out=args.out, run_id=args.run, unredacted=args.unredacted,
                      authorised_by=args.authorised_by, reason=args.reason)
    facts = export(store, request, credentials=credentials, anchors_pem=signing.anchors(settings),
                   tools=settings.tools, work_root=settings.work_dir, actor=settings.actor,
                   floor=settings.release)
    if args.json:
        print_json({"out": str(args.out), **facts})
        return EXIT_OK
    clip = facts["clip"]
    print(f"exported   {printable(args.out)}/clip.mp4: {clip['from']} to {clip['to']} ({clip['duration_s']:g} s), "
          f"sha256 {clip['sha256']}")
    for check in facts["verification"]["checks"]:
        print(f"{'ok  ' if check['ok'] else 'FAIL'}       {check['name']}: {printable(check['detail'])}")
    if facts["test_ca"]:
        print("NOTE       signed with a TEST CA, not for production")
    if facts["masking_review"]:
        print(f"REVIEW     {len(facts['masking_review'])} moment(s) of this clip were marked by the face masking "
              "for a person to check (times in verification-report.json)")
    if not facts["source"]["faces_masked"]:
        print("WARNING    faces are NOT masked in this clip (authorised, logged in custody)")
    print(f"recipient  {printable(args.recipient)}; logged in custody; report: "
          f"{printable(args.out)}/verification-report.html")
    return EXIT_OK
