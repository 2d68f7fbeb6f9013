"""Commands about evidence items: ingest, show, reprocess."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.backends import open_store
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.cli.wiring import intake_options, store_and_queue
from worker.config import Settings
from worker.errors import EvidenceError, JobError
from worker.intake.ingest import ingest, parse_languages, readable_name
from worker.jobs.submit import reprocess
from worker.record import custody, verified
from worker.record.store import EvidenceStore


def register(command) -> None:
    p = command("ingest", "store files as evidence and queue their intake",
                "Store each file write-once under its SHA-256, log it in its custody chain and queue the\n"
                "intake pipeline. The same bytes uploaded again keep their id; the upload is logged.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    intake_options(p)
    p.add_argument("--name", help="original file name to record, when PATH is a renamed copy")
    p.add_argument("--no-enqueue", action="store_true", help="store and log only; process later with reprocess")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(handler=cmd_ingest)

    p = command("show", "one evidence item: original, probe facts, runs, custody",
                "Show one item. Everything shown is verified first: each run.json against the SHA-256 its\n"
                "custody event logged, each output against its run.json. What fails is reported, not shown.")
    p.add_argument("evidence_id", metavar="ID", help="evidence id or a unique prefix (6+ hex digits)")
    p.add_argument("--restricted", action="store_true",
                   help="include restricted facts (creation time, device, GPS); the viewing is logged first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_show)

    p = command("reprocess", "queue a pipeline again for an item",
                "Queue PIPELINE for an item again. The same pipeline version and parameters name the\n"
                "same run, which is not repeated once committed; --set or --new-run make a new run\n"
                "beside the old ones. Earlier runs are never touched. Every parameter is checked now\n"
                "(type and range), so a bad value is refused here with exit 2, not by a worker later.")
    p.add_argument("evidence_id", metavar="ID")
    p.add_argument("--pipeline", default="intake", help="pipeline name (default: intake)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline parameter, e.g. probe.decode_seconds=10 (repeatable)")
    p.add_argument("--new-run", action="store_true", help="run again even with unchanged parameters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_reprocess)


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = store_and_queue(settings, args.master_key())
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
                print(f"NOT STORED  {printable(exc)}", file=sys.stderr)
            continue
        done.append(result.to_json())
        if not args.json:
            state = "already stored (duplicate upload logged)" if result.duplicate else "stored"
            queued = f"; intake job {result.job_id}" if result.job_id else ""
            print(f"{result.evidence_id}  {printable(result.source)}: {state}, {result.size} bytes{queued}")
            if result.not_queued:
                print(f"NOT QUEUED  {result.evidence_id[:12]}: {printable(result.not_queued)}", file=sys.stderr)
    if args.json:
        print_json({"ingested": done, "failed": failed})
    return EXIT_PROBLEM if failed or any(item["not_queued"] for item in done) else EXIT_OK


def _run_statuses(store: EvidenceStore, evidence_id: str, chain: custody.ChainReport,
                  runs: verified.Runs) -> list[dict[str, Any]]:
    statuses: dict[str, dict[str, Any]] = {}
    for record in runs.records:
        statuses[record["run_id"]] = {
            "run_id": record["run_id"], "pipeline": record.get("pipeline"), "version": record.get("version"),
            "status": "committed", "committed_at": record.get("committed_at"),
            "params": record.get("params"), "outputs": record.get("outputs"), "errors": record.get("errors", []),
            "location": store.location(evidence_id, record["run_id"]),
        }
    committed = verified.committed_run_ids(chain)
    for event in chain.events:
        details = event.get("details") or {}
        rid = details.get("run_id") if isinstance(details, dict) else None
        if rid is None or statuses.get(rid, {}).get("status") == "committed":
            continue
        if event.get("event") == custody.RUN_STARTED:
            statuses[rid] = {"run_id": rid, "pipeline": details.get("pipeline"), "version": details.get("version"),
                             "status": "started (running, or its worker stopped)", "params": details.get("params")}
        elif event.get("event") in (custody.RUN_FAILED, custody.RUN_INTERRUPTED) and rid in statuses:
            statuses[rid]["status"] = "failed" if event["event"] == custody.RUN_FAILED else "interrupted"
            statuses[rid]["error"] = details.get("error")
    for rid in committed - {r["run_id"] for r in runs.records}:
        entry = statuses.setdefault(rid, {"run_id": rid})
        entry.pop("error", None)
        if rid in runs.problems:
            entry.update(status="altered", error=f"{runs.problems[rid]}; nothing from it is shown")
        else:
            entry.update(status="deleted or missing", error="custody logged it as committed, but its run folder "
                         "or run.json is gone; run 'evidence audit'")
    for rid, problem in runs.problems.items():  # whatever the events say, a run that fails its check is that
        statuses.setdefault(rid, {"run_id": rid}).update(status="altered", error=f"{problem}; nothing from it is shown")
    return list(statuses.values())


def describe_item(store: EvidenceStore, evidence_id: str, *, restricted: bool, actor: str) -> dict[str, Any]:
    """Everything about one item, verified; with ``restricted``, the viewing is logged before it is shown."""
    record = store.evidence(evidence_id)
    chain = store.custody(evidence_id)
    runs = verified.runs(store, evidence_id, chain)
    probed = [r for r in runs.records if isinstance((r.get("facts") or {}).get("probe"), dict)]
    transcribed = [r for r in runs.records if isinstance((r.get("facts") or {}).get("transcribe"), dict)]
    redacted = [r for r in runs.records if isinstance((r.get("facts") or {}).get("redact"), dict)]
    signed = [r for r in runs.records if isinstance((r.get("facts") or {}).get("sign"), dict)]
    hidden: Any = None
    if restricted and probed:
        run_id = probed[-1]["run_id"]
        facts = json.loads(verified.output(store, evidence_id, probed[-1], "probe.json"))["restricted"]
        store.append_custody(evidence_id, custody.RESTRICTED_VIEWED, actor, {"run_id": run_id}, recover=False)
        chain = store.custody(evidence_id)  # the count shown includes this viewing
        hidden = facts
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
        "transcript": ({**transcribed[-1]["facts"]["transcribe"], "run_id": transcribed[-1]["run_id"]}
                       if transcribed else None),
        "redaction": ({**redacted[-1]["facts"]["redact"], "run_id": redacted[-1]["run_id"]} if redacted else None),
        "signature": ({**signed[-1]["facts"]["sign"], "run_id": signed[-1]["run_id"]} if signed else None),
        "runs": _run_statuses(store, evidence_id, chain, runs),
        "custody": {"events": chain.count, "chain_ok": chain.ok, "problems": chain.problems, "head": chain.head},
        "problems": verified.intake_problems(record, chain),
    }
    if restricted:
        report["restricted"] = hidden
    return report


def print_item(report: dict[str, Any]) -> None:
    original, probe, chain = report["original"], report["probe"], report["custody"]
    print(f"evidence   {report['evidence_id']}")
    print(f"original   {printable(repr(original['name']))}, {original['size']} bytes, sha256 {original['sha256']}")
    print(f"stored in  {printable(original['location'])}/{printable(original['stored_as'])}")
    print(f"intake     {original['ingested_at']} by {printable(original['ingested_by'])};"
          f" case {printable(original['case'] or '-')}; collected by {printable(original['collected_by'] or '-')};"
          f" languages {','.join(original['languages']) or '-'}")
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
        print("probe      " + printable("; ".join(parts)))
    else:
        print("probe      no verified intake run yet")
    words = report.get("transcript")
    if words and not words.get("has_audio"):
        print("transcript no audio stream")
    elif words:
        found = ", ".join(f"{lang} {seconds:g} s" for lang, seconds in (words.get("languages_found") or {}).items())
        made = words.get("made_by") or {}
        print(f"transcript {words['speech_s']:g} s of speech, {words['needs_human_s']:g} s need human "
              f"transcription; {printable(found or 'no speech')}; segments {printable(words.get('segments'))}")
        if made:
            print(f"           {made['machine']} segment(s) machine-made (unverified until a person checks them), "
                  f"{made['human']} checked by a person, {made['needs_human']} need a person")
    masked = report.get("redaction")
    if masked and masked.get("skipped"):
        print(f"redaction  none: {printable(masked['skipped'])}")
    elif masked:
        print(f"redaction  policy {masked['policy']}: {masked['tracks_masked']} of {masked['tracks']} face tracks "
              f"masked on {masked['frames_with_masks']} of {masked['frames']} frames; "
              f"{masked['review_moments']} moment(s) to review; audio {printable(masked['audio'])}")
    signature = report.get("signature")
    if signature and not signature.get("skipped"):
        test = ("; TEST CA, not for production" if signature.get("test_ca")
                and "TEST CA" not in str(signature.get("signer")) else "")
        print(f"signature  redacted.mp4 carries a C2PA manifest signed ({signature['algorithm']}) by "
              f"{printable(signature['signer'])}{test}; check it with 'evidence verify'")
    for run in report["runs"]:
        outputs = ", ".join(sorted(run.get("outputs") or {})) or "-"
        error = f": {printable(run['error'])}" if run.get("error") else ""
        print(f"run        {run['run_id']}  {run['status']}{error}  outputs: {outputs}")
    verdict = "chain verifies" if chain["chain_ok"] else "CHAIN BROKEN: " + printable("; ".join(chain["problems"]))
    print(f"custody    {chain['events']} events, {verdict}")
    for problem in report["problems"]:
        print(f"PROBLEM    {printable(problem)}")
    if "restricted" in report:
        print("restricted " + printable(json.dumps(report["restricted"], ensure_ascii=False)))


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings, args.master_key())
    evidence_id = store.resolve(args.evidence_id)
    report = describe_item(store, evidence_id, restricted=args.restricted, actor=settings.actor)
    print_json(report) if args.json else print_item(report)
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
    store, queue = store_and_queue(settings, args.master_key())
    evidence_id = store.resolve(args.evidence_id)
    job, rid = reprocess(store, queue, evidence_id, pipeline=args.pipeline, params=_parse_sets(args.settings),
                         new_run=args.new_run, actor=settings.actor)
    report = {"job_id": job.id, "evidence_id": evidence_id, "pipeline": args.pipeline, "run_id": rid,
              "already_committed": store.is_committed(evidence_id, rid)}
    if args.json:
        print_json(report)
    else:
        print(f"queued job {job.id}: {args.pipeline} for {evidence_id[:12]} -> run {rid}")
        if report["already_committed"]:
            print("that run is already committed, so the job will change nothing; "
                  "use --new-run or --set to make a new run")
    return EXIT_OK
