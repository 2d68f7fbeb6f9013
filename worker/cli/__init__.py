"""The ``evidence`` command: one module per command family, wired here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from models.registry import ModelError
from pipelines import registry as pipelines
from pipelines.errors import StepError
from pipelines.pipeline import ParameterError
from worker import __version__
from worker.cli import admin, custody, export, items, jobs, models, provenance, redact, replicas, transcribe
from worker.cli.output import EXIT_BROKEN_PIPE, EXIT_NOT_FOUND, EXIT_PROBLEM, EXIT_USAGE, printable
from worker.config import load_settings
from worker.encryption import master
from worker.errors import ConfigError, EvidenceError, JobError, NotFound
from worker.logs import FORMATS
from worker.logs import configure as configure_logs

DESCRIPTION = """\
Preserve field footage as evidence: store each original write-once under its
SHA-256, keep a hash-chained custody log, and process it through versioned
pipelines (intake = probe, transcribe, redact, sign) from a durable queue.

Everyday use:
  evidence ingest interview.mp4 --case C-17 --collected-by "team 2" --languages ru,ce
  evidence worker --once                 process everything queued, then exit
  evidence worker --inbox ~/inbox        run as a service; files dropped in the inbox are ingested
  evidence show 3f2a9c                   one item: original, probe facts, runs, custody
  evidence audit                         re-hash everything; exit 1 on any problem
  evidence verify clip.mp4               check a signed video offline, back to its original
  evidence export 3f2a9c --from 00:01:00 --to 00:01:30 --recipient "Prosecutor X" --out clip-x
"""

EPILOG = """\
settings: --config FILE or EVIDENCE_CONFIG (TOML), then EVIDENCE_* variables
  (EVIDENCE_HOME=/srv/evidence, EVIDENCE_QUEUE__MAX_ATTEMPTS=3). See 'evidence config show'.
exit status: 0 done; 1 done, but something failed (worker --once: a job was dead-lettered), an audit
  found a problem or the disk is full;
  2 bad usage or settings; 3 no such evidence item or job; 141 the output pipe closed early.
--json output is one JSON document on stdout; logs go to stderr, readable lines on a terminal and JSON
  lines otherwise (--log-format, -q, -v before the command: evidence -v worker --once).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evidence", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML settings file (default: $EVIDENCE_CONFIG)")
    parser.add_argument("--version", action="version", version=f"evidence-worker {__version__}")
    parser.add_argument("--log-format", choices=FORMATS,
                        help="logs on stderr: human (the default on a terminal) or json (the default otherwise)")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    loudness.add_argument("-v", "--verbose", action="store_true", help="log debugging detail too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=description or help_text,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    for family in (items, custody, jobs, transcribe, redact, provenance, export, models, replicas, admin):
        family.register(command)
    return parser


def _fail(code: int, error: BaseException) -> int:
    print(f"evidence: {printable(error)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # whatever this process creates is owner-only, beyond the explicit modes
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        pipelines.configure(settings.step_defaults)
    except (ConfigError, ParameterError) as exc:
        return _fail(EXIT_USAGE, exc)
    configure_logs("WARNING" if args.quiet else "DEBUG" if args.verbose else settings.log_level, args.log_format)
    try:
        # The composition root of one command: the master key is loaded here, once, when first asked for.
        args.master_key = master.on_demand(settings)
        code = args.handler(settings, args)
        sys.stdout.flush()  # inside the try: a reader that went away is handled here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`evidence status | head`): stop quietly, and let no later flush complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except NotFound as exc:
        return _fail(EXIT_NOT_FOUND, exc)
    except FileExistsError as exc:   # keys, certificates, exports: this software never overwrites a file
        return _fail(EXIT_USAGE, f"{exc.filename} already exists; nothing was overwritten: name a new path")
    except (JobError, ConfigError, ValueError) as exc:
        return _fail(EXIT_USAGE, exc)
    except (EvidenceError, ModelError, StepError) as exc:
        return _fail(EXIT_PROBLEM, exc)
    except KeyboardInterrupt:
        return 130
