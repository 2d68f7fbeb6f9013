"""``evidence transcribe FILE``: the intake's probe and transcribe steps on a file outside the store."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pipelines import registry as pipelines
from pipelines.pipeline import StepContext
from pipelines.probe import probe_file
from worker.cli.output import EXIT_OK, print_json, printable
from worker.cli.wiring import models as registry
from worker.config import Settings
from worker.fs.workdirs import private_workdir
from worker.intake.ingest import parse_languages, readable_name
from worker.progress import counted


def register(command) -> None:
    p = command("transcribe", "transcribe one file outside the store (nothing is stored or logged)",
                "Run the same checks and the same transcription as the intake pipeline on FILE, and write\n"
                "transcript.json, .vtt, .srt and .txt into --out. Russian goes to Whisper; speech that is\n"
                "not confidently Russian is marked for human transcription (or, with a model configured\n"
                "for that language, given as an unverified machine draft), never written as Russian.")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--languages", default="", help="spoken languages, ISO 639 codes: ru,ce")
    p.add_argument("--out", type=Path, help="folder for the four files (default: FILE's name + .transcript)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a transcribe parameter, e.g. beam_size=1 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_transcribe)


def cmd_transcribe(settings: Settings, args: argparse.Namespace) -> int:
    intake = pipelines.get("intake")
    overrides = {f"transcribe.{key}": value for key, _, value in (s.partition("=") for s in args.settings)}
    params = intake.resolve_params(overrides)
    step = next(s for s in intake.steps if s.name == "transcribe")
    out = args.out or Path(f"{args.file.name}.transcript")
    facts, _, _ = probe_file(args.file, intake.step_params(intake.steps[0], params), settings.tools)
    with private_workdir(settings.work_dir, "transcribe") as work, counted("transcribing", "chunk") as progress:
        context = StepContext(
            evidence_id="", original=args.file.resolve(), workdir=Path(work), params=intake.step_params(step, params),
            facts={"probe": facts}, tools=settings.tools, models=registry(settings),
            languages=tuple(parse_languages(args.languages)), progress=progress,
        )
        result = step.run(context)
        out.mkdir(parents=True, exist_ok=True)
        for name, path in result.files.items():
            shutil.copyfile(path, out / name)
    report = {"file": readable_name(str(args.file))[0], "out": str(out), **result.facts,
              "warnings": list(result.warnings)}
    if args.json:
        print_json(report)
    else:
        print(f"{printable(report['file'])}: {report['speech_s']} s of speech, {report['needs_human_s']} s need human "
              f"transcription; {printable(report['segments'])}")
        print(f"written to {printable(out)}/transcript.{{json,vtt,srt,txt}}", file=sys.stderr)
    return EXIT_OK
