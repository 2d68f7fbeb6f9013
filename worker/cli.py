"""The ``evidence`` command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from worker import __version__, custody
from worker.audit import audit_store
from worker.backends import open_queue, open_store
from worker.config import Settings, load_settings
from worker.errors import BadSource, ConfigError, EvidenceError, JobError, NotFound
from worker.inbox import Inbox
from worker.intake import ingest, parse_languages, readable_name
from worker.jobs import reprocess
from worker.logs import configure as configure_logs
from worker.queue import DEAD
from worker.runner import Runner
from worker.store import EvidenceStore
from worker.worker import Worker

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
SAMPLE_VIDEO = Path(__file__).parent / "samples" / "street-walkers-1080p.mp4"

DESCRIPTION = """\
Preserve field footage as evidence: store each original write-once under its
SHA-256, keep a hash-chained custody log, and process it through versioned
pipelines (today: intake = probe) from a durable queue.

Everyday use:
  evidence ingest interview.mp4 --case C-17 --collected-by "team 2" --languages ru,ce
  evidence worker --once                 process everything queued, then exit
  evidence worker --inbox ~/inbox        run as a service; files dropped in the inbox are ingested
  evidence show 3f2a9c                   one item: original, probe facts, runs, custody
  evidence audit                         re-hash everything; exit 1 on any problem
"""

EPILOG = """\
settings: --config FILE or EVIDENCE_CONFIG (TOML), then EVIDENCE_* variables
  (EVIDENCE_HOME=/srv/evidence, EVIDENCE_QUEUE__MAX_ATTEMPTS=3). See 'evidence config show'.
exit status: 0 done; 1 done, but something failed or an audit found a problem;
  2 bad usage or settings; 3 no such evidence item or job.
--json output is one JSON document on stdout; logs are JSON lines on stderr.
"""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _intake_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", help="case or matter this footage belongs to")
    parser.add_argument("--collected-by", help="who recorded or collected it (a name or a team code)")
    parser.add_argument("--languages", default="", help="spoken languages, ISO 639 codes: ru,ce")
    parser.add_argument("--note", help="free text kept with the intake record")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evidence", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $EVIDENCE_CONFIG)")
    parser.add_argument("--version", action="version", version=f"evidence-worker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=description or help_text,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("ingest", "store files as evidence and queue their intake",
                "Store each file write-once under its SHA-256, log it in its custody chain and queue the\n"
                "intake pipeline. The same bytes uploaded again keep their id; the upload is logged.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    _intake_options(p)
    p.add_argument("--name", help="original file name to record, when PATH is a renamed copy")
    p.add_argument("--no-enqueue", action="store_true", help="store and log only; process later with reprocess")
    p.add_argument("--json", action="store_true", help="print a JSON report")

    p = command("watch", "ingest files dropped into a folder",
                "Ingest every file in INBOX once its size has stopped changing, then move it to\n"
                "INBOX/.ingested/. A file that fails stays put with a .error note beside it.")
    p.add_argument("inbox", type=Path, metavar="INBOX")
    _intake_options(p)
    p.add_argument("--once", action="store_true", help="ingest what is there now, then exit")

    p = command("worker", "process queued jobs",
                "Lease jobs from the queue and run them. SIGTERM/Ctrl-C: finish the current job and exit;\n"
                "a second signal gives the job back to the queue at once.")
    p.add_argument("--once", action="store_true", help="process every due job, then exit 0")
    p.add_argument("--inbox", type=Path, help="also watch this folder for uploads (see 'evidence watch')")
    _intake_options(p)

    p = command("status", "queue counts and dead letters")
    p.add_argument("--json", action="store_true")

    p = command("show", "one evidence item: original, probe facts, runs, custody")
    p.add_argument("evidence_id", metavar="ID", help="evidence id or a unique prefix (6+ hex digits)")
    p.add_argument("--restricted", action="store_true",
                   help="include restricted facts (creation time, device, GPS); the viewing is logged")
    p.add_argument("--json", action="store_true")

    p = command("reprocess", "queue a pipeline again for an item",
                "Queue PIPELINE for an item again. The same pipeline version and parameters name the\n"
                "same run, which is not repeated once committed; --set or --new-run make a new run\n"
                "beside the old ones. Earlier runs are never touched.")
    p.add_argument("evidence_id", metavar="ID")
    p.add_argument("--pipeline", default="intake", help="pipeline name (default: intake)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline parameter, e.g. probe.decode_seconds=10 (repeatable)")
    p.add_argument("--new-run", action="store_true", help="run again even with unchanged parameters")
    p.add_argument("--json", action="store_true")

    p = command("audit", "re-hash every original; verify custody chains and run outputs",
                "Re-hash every original, verify every custody chain and every committed run's output\n"
                "hashes, and log the result in each item's custody chain. Exit 1 on any problem.")
    p.add_argument("--json", action="store_true")

    p = command("dead-letters", "list jobs that failed for good; retry one")
    p.add_argument("--retry", metavar="JOB", help="put this dead-lettered job back in the queue")
    p.add_argument("--json", action="store_true")

    p = command("config", "settings")
    p.add_argument("action", choices=["show"], help="show: the effective settings, secrets redacted")

    p = command("demo", "ingest the bundled sample video, process it and show the result")
    p.add_argument("--json", action="store_true")
    return parser


# -- wiring -----------------------------------------------------------------

def _runner(settings: Settings, store: EvidenceStore) -> Runner:
    return Runner(store, work_dir=settings.work_dir, tools=settings.tools, actor=settings.actor)


def _inbox(settings: Settings, store, queue, folder: Path, args: argparse.Namespace) -> Inbox:
    ingest_one = partial(
        ingest, store, queue, actor=settings.actor, case=args.case, collected_by=args.collected_by,
        languages=parse_languages(args.languages), note=args.note, follow_symlinks=False,
    )
    return Inbox(folder, ingest_one, stable_s=settings.worker.inbox_stable_s)


def _worker(settings: Settings, store, queue, inbox: Inbox | None = None) -> Worker:
    return Worker(
        queue, _runner(settings, store), visibility_timeout_s=settings.queue.visibility_timeout_s,
        heartbeat_interval_s=settings.heartbeat_interval_s, poll_interval_s=settings.worker.poll_interval_s,
        inbox=inbox,
    )


# -- commands ---------------------------------------------------------------

def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    languages = parse_languages(args.languages)
    done, failed = [], []
    for path in args.paths:
        try:
            result = ingest(store, queue, path, actor=settings.actor, name=args.name, case=args.case,
                            collected_by=args.collected_by, languages=languages, note=args.note,
                            enqueue=not args.no_enqueue)
        except EvidenceError as exc:
            failed.append({"source": readable_name(str(path))[0], "error": str(exc)})
            if not args.json:
                print(f"NOT STORED  {exc}", file=sys.stderr)
            continue
        done.append(result.to_json())
        if not args.json:
            state = "already stored (duplicate upload logged)" if result.duplicate else "stored"
            queued = f"; intake job {result.job_id}" if result.job_id else ""
            print(f"{result.evidence_id}  {result.source}: {state}, {result.size} bytes{queued}")
    if args.json:
        _print_json({"ingested": done, "failed": failed})
    return EXIT_PROBLEM if failed else EXIT_OK


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    inbox = _inbox(settings, store, queue, args.inbox, args)
    if args.once:
        inbox.scan_settled()
        return EXIT_OK
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    inbox.watch(stop, settings.worker.poll_interval_s)
    return EXIT_OK


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    inbox = _inbox(settings, store, queue, args.inbox, args) if args.inbox else None
    return _worker(settings, store, queue, inbox).run(once=args.once)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    report = {
        "queue": queue.counts(),
        "dead_letters": [job.to_json() for job in queue.jobs(DEAD)],
        "evidence_items": len(store.evidence_ids()),
        "store": settings.store_root,
    }
    if args.json:
        _print_json(report)
        return EXIT_OK
    print("queue   " + "  ".join(f"{state} {n}" for state, n in report["queue"].items()))
    print(f"store   {report['evidence_items']} evidence items in {settings.store_root}")
    if report["dead_letters"]:
        print("dead letters (evidence dead-letters --retry JOB):")
        for job in report["dead_letters"]:
            print(f"  {job['job_id']}  {job['evidence_id'][:12]}  {job['pipeline']}  "
                  f"after {job['attempts']} attempt(s): {job['reason']}")
    return EXIT_OK


def _run_statuses(store: EvidenceStore, evidence_id: str, chain: custody.ChainReport) -> list[dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for record in store.run_records(evidence_id):
        runs[record["run_id"]] = {
            "run_id": record["run_id"], "pipeline": record.get("pipeline"), "version": record.get("version"),
            "status": "committed", "committed_at": record.get("committed_at"),
            "params": record.get("params"), "outputs": record.get("outputs"), "errors": record.get("errors", []),
            "location": store.location(evidence_id, record["run_id"]),
        }
    for event in chain.events:
        details = event.get("details") or {}
        rid = details.get("run_id")
        if rid is None or rid in runs and runs[rid]["status"] == "committed":
            continue
        if event.get("event") == custody.RUN_STARTED:
            runs[rid] = {"run_id": rid, "pipeline": details.get("pipeline"), "version": details.get("version"),
                         "status": "started (running, or its worker stopped)", "params": details.get("params")}
        elif event.get("event") in (custody.RUN_FAILED, custody.RUN_INTERRUPTED) and rid in runs:
            runs[rid]["status"] = "failed" if event["event"] == custody.RUN_FAILED else "interrupted"
            runs[rid]["error"] = details.get("error")
    return list(runs.values())


def describe_item(store: EvidenceStore, evidence_id: str, *, restricted: bool, actor: str) -> dict[str, Any]:
    record = store.evidence(evidence_id)
    chain = store.custody(evidence_id)
    runs = store.run_records(evidence_id)
    probed = [r for r in runs if isinstance((r.get("facts") or {}).get("probe"), dict)]
    report: dict[str, Any] = {
        "evidence_id": evidence_id,
        "original": {
            "name": record.get("original_name"), "size": record.get("size"), "sha256": record.get("sha256"),
            "stored_as": record.get("stored_as"), "location": store.location(evidence_id),
            "ingested_at": record.get("ingested_at"), "ingested_by": record.get("ingested_by"),
            "case": record.get("case"), "collected_by": record.get("collected_by"),
            "languages": record.get("languages", []), "note": record.get("note"),
        },
        "probe": probed[-1]["facts"]["probe"] if probed else None,
        "runs": _run_statuses(store, evidence_id, chain),
        "custody": {"events": chain.count, "chain_ok": chain.ok, "problems": chain.problems, "head": chain.head},
    }
    if restricted:
        report["restricted"] = None
        if probed:
            run_id = probed[-1]["run_id"]
            report["restricted"] = json.loads(store.read_output(evidence_id, run_id, "probe.json"))["restricted"]
            store.append_custody(evidence_id, custody.RESTRICTED_VIEWED, actor, {"run_id": run_id})
    return report


def _print_item(report: dict[str, Any]) -> None:
    original, probe, chain = report["original"], report["probe"], report["custody"]
    print(f"evidence   {report['evidence_id']}")
    print(f"original   {original['name']!r}, {original['size']} bytes, sha256 {original['sha256']}")
    print(f"stored in  {original['location']}/{original['stored_as']}")
    print(f"intake     {original['ingested_at']} by {original['ingested_by']}; case {original['case'] or '-'};"
          f" collected by {original['collected_by'] or '-'}; languages {','.join(original['languages']) or '-'}")
    if probe:
        parts = [probe["container"], f"{probe['duration_s']} s"]
        if probe.get("video"):
            v = probe["video"]
            rate = "variable" if v.get("variable_frame_rate") else "constant"
            parts.append(f"video {v['codec']} {v['width']}x{v['height']} at {v['frame_rate']:g} fps ({rate}),"
                         f" rotation {v['rotation']}")
        if probe.get("audio"):
            a = probe["audio"]
            parts.append(f"audio {a['codec']} {a['sample_rate']} Hz, {a['channels']} ch")
        print("probe      " + "; ".join(parts))
    else:
        print("probe      no committed intake run yet")
    for run in report["runs"]:
        outputs = ", ".join(sorted(run.get("outputs") or {})) or "-"
        error = f": {run['error']}" if run.get("error") else ""
        print(f"run        {run['run_id']}  {run['status']}{error}  outputs: {outputs}")
    verdict = "chain verifies" if chain["chain_ok"] else "CHAIN BROKEN: " + "; ".join(chain["problems"])
    print(f"custody    {chain['events']} events, {verdict}")
    if "restricted" in report:
        print("restricted " + json.dumps(report["restricted"], ensure_ascii=False))


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    evidence_id = store.resolve(args.evidence_id)
    report = describe_item(store, evidence_id, restricted=args.restricted, actor=settings.actor)
    _print_json(report) if args.json else _print_item(report)
    return EXIT_OK


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise JobError(f"--set takes KEY=VALUE, not {item!r}")
        params[key.strip()] = value
    return params


def cmd_reprocess(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    evidence_id = store.resolve(args.evidence_id)
    job, rid = reprocess(store, queue, evidence_id, pipeline=args.pipeline, params=_parse_sets(args.settings),
                         new_run=args.new_run, actor=settings.actor)
    report = {"job_id": job.id, "evidence_id": evidence_id, "pipeline": args.pipeline, "run_id": rid,
              "already_committed": store.is_committed(evidence_id, rid)}
    if args.json:
        _print_json(report)
    else:
        print(f"queued job {job.id}: {args.pipeline} for {evidence_id[:12]} -> run {rid}")
        if report["already_committed"]:
            print("that run is already committed, so the job will change nothing; "
                  "use --new-run or --set to make a new run")
    return EXIT_OK


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    items = []
    for item in audit_store(store, settings.actor):
        items.append(item)
        if not args.json:
            state = "ok     " if item.ok else "PROBLEM"
            print(f"{state} {item.evidence_id}  {item.custody_events} custody events, {item.runs_checked} runs")
            for line in item.problems:
                print(f"          - {line}")
            for line in item.notes:
                print(f"          note: {line}")
    problems = sum(not item.ok for item in items)
    if args.json:
        _print_json({"ok": problems == 0, "items": len(items), "items_with_problems": problems,
                     "results": [item.to_json() for item in items]})
    else:
        print(f"audit: {len(items)} items, {problems} with problems")
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    queue = open_queue(settings)
    if args.retry:
        job = queue.retry_dead(args.retry)
        _print_json(job.to_json()) if args.json else print(f"job {job.id} is queued again")
        return EXIT_OK
    jobs = [job.to_json() for job in queue.jobs(DEAD, limit=10_000)]
    if args.json:
        _print_json({"dead_letters": jobs})
    elif not jobs:
        print("no dead letters")
    for job in [] if args.json else jobs:
        print(f"{job['job_id']}  {job['evidence_id']}  {job['pipeline']}  attempts {job['attempts']}")
        print(textwrap.indent(textwrap.fill(job["reason"] or "", 100), "    "))
    return EXIT_OK


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    _print_json(settings.redacted())
    return EXIT_OK


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = open_store(settings), open_queue(settings)
    result = ingest(store, queue, SAMPLE_VIDEO, actor=settings.actor, case="demo",
                    collected_by="evidence demo", note="bundled sample video (MIT, facenet-pytorch examples)")
    _worker(settings, store, queue).run(once=True)
    report = describe_item(store, result.evidence_id, restricted=False, actor=settings.actor)
    report["queue"] = queue.counts()
    if args.json:
        _print_json(report)
        return EXIT_OK
    _print_item(report)
    print(f"\nstore      {settings.store_root}\nqueue      {settings.queue_path}  ({report['queue']})")
    print(f"next       evidence show {result.evidence_id[:12]} --json;  evidence audit")
    committed = any(run["status"] == "committed" for run in report["runs"])
    return EXIT_OK if committed else EXIT_PROBLEM


COMMANDS = {
    "ingest": cmd_ingest, "watch": cmd_watch, "worker": cmd_worker, "status": cmd_status, "show": cmd_show,
    "reprocess": cmd_reprocess, "audit": cmd_audit, "dead-letters": cmd_dead_letters, "config": cmd_config,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logs(settings.log_level)
    try:
        return COMMANDS[args.command](settings, args)
    except NotFound as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (JobError, ValueError) as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BadSource as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except EvidenceError as exc:
        print(f"evidence: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
