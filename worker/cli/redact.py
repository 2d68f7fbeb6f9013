"""``evidence redact FILE --out FILE`` and ``evidence staff enroll|list|remove``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from pipelines import registry as pipelines
from pipelines.pipeline import StepContext
from pipelines.probe import probe_file
from pipelines.redact.spec import STAFF_MODEL
from worker.cli.output import EXIT_OK, print_json, printable
from worker.cli.wiring import models as registry
from worker.config import Settings
from worker.fs.workdirs import private_workdir
from worker.intake.ingest import readable_name
from worker.processing.staff import Roster
from worker.progress import counted


def register(command) -> None:
    p = command("redact", "mask every face of one video outside the store (nothing is stored or logged)",
                "Run the intake's checks and its redact step on FILE and write the masked video to --out,\n"
                "with redaction-report.json beside it. Faces are found on every frame, linked into tracks,\n"
                "gaps filled and margins added, then covered by a solid shape whose pixels owe nothing to\n"
                "the face (never a blur: blurred faces are re-identified). Audio is copied packet for packet;\n"
                "metadata (GPS, device, creation time) is not carried over. Check the report's 'review'\n"
                "moments by eye before the video leaves the building.\n\n"
                "  evidence redact interview.mp4 --out interview.redacted.mp4\n"
                "  evidence redact clip.mov --out out.mp4 --policy staff --set voice=disguise")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--out", type=Path, required=True, help="the masked video to write (MP4); never overwritten")
    p.add_argument("--policy", choices=("all", "staff"), help="whose faces: everyone's (default) or enrolled "
                   "staff's plus every face that cannot be cleared")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a redact parameter, e.g. detect_scale=1 or style=noise (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_redact)

    s = command("staff", "enrol, list or remove anonymous staff whose faces the staff policy masks",
                "Enrolment keeps face embeddings only (128 numbers a face, dlib's ResNet), never photos,\n"
                "in <home>/staff/roster.json, readable by its owner only. Each photo must show exactly one\n"
                "face; a video must show the one person alone.\n\n"
                "  evidence staff enroll 'field lawyer 2' face1.jpg face2.jpg walkby.mp4\n"
                "  evidence staff list\n"
                "  evidence staff remove 'field lawyer 2'")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    enroll = actions.add_parser("enroll", help="add a person's face from photos or videos")
    enroll.add_argument("name")
    enroll.add_argument("files", type=Path, nargs="+", metavar="IMAGE_OR_VIDEO")
    enroll.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="enrolled names and how many faces each has")
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", help="forget a person's faces")
    remove.add_argument("name")
    remove.add_argument("--json", action="store_true")
    sealing = actions.add_parser("seal", help="encrypt a roster written before [encryption] was configured (once)")
    sealing.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_staff)


def cmd_redact(settings: Settings, args: argparse.Namespace) -> int:
    # The media libraries: loaded for this command only.
    from pipelines.redact.step import redact_file

    intake = pipelines.get("intake")
    overrides = {f"redact.{key}": value for key, _, value in (s.partition("=") for s in args.settings)}
    if args.policy:
        overrides["redact.policy"] = args.policy
    params = intake.resolve_params(overrides)
    step = next(s for s in intake.steps if s.name == "redact")
    report_out = args.out.with_name(args.out.stem + ".redaction-report.json")
    for path in (args.out, report_out):
        if path.exists() or path.is_symlink():
            raise ValueError(f"{path} exists; choose a new name (a masked video is never written over a file)")
    if params["redact.policy"] == "none":
        raise ValueError("redact.policy is none (in the settings): pass --policy all or --policy staff")
    if not args.file.is_file():
        raise ValueError(f"{readable_name(str(args.file))[0]} is not a file")
    step_params = intake.step_params(step, params)
    with private_workdir(settings.work_dir, "redact") as work, counted("masking", "frame") as progress:
        # One private copy, read by every pass: a file changed between two passes must not mix into the output.
        original = Path(work) / "original"
        _copy_new(args.file, original)
        facts, _, _ = probe_file(original, intake.step_params(intake.steps[0], params), settings.tools)
        if not facts["has_video"]:
            raise ValueError(f"{readable_name(str(args.file))[0]} has no video stream: nothing to mask")
        context = StepContext(
            evidence_id="", original=original, workdir=Path(work), params=step_params,
            facts={"probe": facts}, tools=settings.tools, models=registry(settings), progress=progress,
            staff=Roster(settings.home, args.master_key()).embeddings() if step_params["policy"] == "staff"
            else (),
        )
        result = redact_file(context, Path(work) / "redacted.mp4")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _publish(Path(work) / "redacted.mp4", args.out)
        _publish(result["report_path"], report_out)
    summary = {"file": readable_name(str(args.file))[0], "out": str(args.out), "report": str(report_out),
               **result["facts"], "warnings": result["warnings"]}
    if args.json:
        print_json(summary)
    else:
        print(f"{printable(summary['file'])}: {summary['tracks_masked']} face track(s) masked on "
              f"{summary['frames_with_masks']} of {summary['frames']} frames, {summary['review_moments']} moment(s) "
              f"to review; audio {summary['audio']}")
        print(f"written {printable(args.out)} and {printable(report_out)}", file=sys.stderr)
    return EXIT_OK


def _copy_new(source: Path, target: Path) -> None:
    """Copy into a file that must not exist yet, never through a link, owner-only, durably."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(source, "rb") as reading, os.fdopen(fd, "wb") as writing:
        shutil.copyfileobj(reading, writing, 8 * 2**20)
        writing.flush()
        os.fsync(writing.fileno())


def _publish(source: Path, target: Path) -> None:
    """``source`` appears at ``target`` whole or not at all, and never replaces anything there."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    _copy_new(source, partial)
    try:
        os.link(partial, target, follow_symlinks=False)
    except FileExistsError:
        raise ValueError(f"{target} appeared while masking; nothing was written over it") from None
    finally:
        partial.unlink(missing_ok=True)


def cmd_staff(settings: Settings, args: argparse.Namespace) -> int:
    roster = Roster(settings.home, args.master_key())
    if args.action == "enroll":
        models = registry(settings)
        detector = models.load("yunet-2023mar").path / "model.onnx"
        embedder = models.load(STAFF_MODEL).path
        with private_workdir(settings.work_dir, "enrol") as work:
            # OpenCV and dlib: loaded when enrolling only.
            from pipelines.redact.staff import enrolment_embeddings

            found = enrolment_embeddings(args.files, detector, embedder, settings.tools, Path(work))
        total = roster.enroll(args.name, found)
        report = {"name": args.name, "added": len(found), "faces": total}
        message = f"{printable(args.name)}: {len(found)} face(s) added, {total} in all"
    elif args.action == "seal":
        count = roster.seal()
        report = {"sealed": True, "people": count}
        message = f"roster sealed ({count} people)"
    elif args.action == "remove":
        roster.remove(args.name)
        report = {"name": args.name, "removed": True}
        message = f"{printable(args.name)}: removed"
    else:
        report = {"staff": roster.names()}
        message = "\n".join(f"{printable(n)}  {c} face(s)" for n, c in report["staff"].items()) or "nobody enrolled"
    if args.json:
        print_json(report)
    else:
        print(message)
    return EXIT_OK
