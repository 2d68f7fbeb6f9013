"""Commands for off-site copies: replicate (and --status), restore."""

from __future__ import annotations

import argparse
from typing import Any

from worker.backends import open_replica, open_store
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.config import Settings
from worker.errors import ConfigError, EvidenceError
from worker.processing import signing_set
from worker.processing.replication import (
    Copied,
    keep_signing,
    lag,
    opened,
    replica_errors,
    replicate,
    restore,
    verify_replica,
)
from worker.progress import progress_bar


def register(command) -> None:
    p = command("replicate", "bring every [[replicas]] store level with this one, or show what is behind",
                "Copy to each replica what it lacks: originals with their intake records, committed runs,\n"
                "custody events. Each piece is read back from the replica and re-hashed before the item's\n"
                "custody log says 'replicated'. Safe to interrupt and to run again: nothing is copied twice.\n"
                "The worker does the same on its own, after every job; this is for a person to check or\n"
                "to catch up at once (a removable disk just attached). Exit 1 if anything is left behind.")
    p.add_argument("--replica", metavar="NAME", help="only this replica (default: every [[replicas]] entry)")
    p.add_argument("--status", action="store_true", help="only show what each replica lacks; copy nothing")
    p.add_argument("--verify", action="store_true",
                   help="also re-read everything each replica holds and re-hash it (a scrub: slow, thorough)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_replicate)

    p = command("restore", "rebuild this (new, empty) store from a replica: the disaster-recovery step",
                "After the primary store is lost (a seized or burned machine), point a fresh installation at\n"
                "a new, empty store, attach or configure the replica, and run 'evidence restore --from NAME'.\n"
                "Every item is copied back and verified; each custody log records the restore. Then run\n"
                "'evidence audit', which must pass, and start the worker again.")
    p.add_argument("--from", dest="source", metavar="NAME", required=True, help="the [[replicas]] entry to read")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_restore)


def _names(settings: Settings, only: str | None) -> list[str]:
    if only:
        return [settings.replica(only).name]
    if not settings.replicas:
        raise ConfigError("no [[replicas]] are configured: see docs/storage.md, 'Replicas'")
    return [replica.name for replica in settings.replicas]


def cmd_replicate(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings, args.master_key())
    ids = store.evidence_ids()
    report: dict[str, dict[str, Any]] = {}
    replicas = {}
    kept = signing_set.keepsakes(settings)
    for name in _names(settings, args.replica):
        report[name] = {"items": len(ids), "behind": [], "copied": [], "failed": [], "problems": []}
        try:
            replicas[name] = opened(open_replica(settings, name, args.master_key()))
            with replica_errors(name):   # how many files of the signing set it lacks (--status) or was given
                report[name]["signing_files"] = (len(set(kept) - set(replicas[name].signing_files())) if args.status
                                                 else keep_signing(replicas[name], kept))
        except EvidenceError as exc:
            report[name]["unreachable"] = str(exc)
    logged: set[str] = set()
    for name, replica in replicas.items():
        entry = report[name]
        for evidence_id in ids:
            try:
                copied = _pass(store, replica, name, evidence_id, entry, settings, args)
            except (EvidenceError, OSError) as exc:
                entry["failed"].append({"evidence_id": evidence_id, "reason": str(exc)})
                continue
            if copied is not None and copied.logged:
                logged.add(evidence_id)
    # A "replicated" event logged for one replica is new to the others: a quiet second pass copies it.
    for name, replica in replicas.items():
        for evidence_id in sorted(logged):
            try:
                replicate(store, replica, name, evidence_id, actor=settings.actor, work=settings.work_dir)
            except (EvidenceError, OSError) as exc:
                report[name]["failed"].append({"evidence_id": evidence_id, "reason": str(exc)})
    for entry in report.values():
        diverged = any(behind["problems"] for behind in entry["behind"])
        entry["level"] = ("unreachable" not in entry and not entry["failed"] and not entry["problems"]
                          and not diverged and not (args.status and (entry["behind"] or entry.get("signing_files"))))
    ok = all(entry["level"] for entry in report.values())
    if args.json:
        print_json({"ok": ok, "replicas": report})
    else:
        _print(report, args.status)
    return EXIT_OK if ok else EXIT_PROBLEM


def _pass(store, replica, name: str, evidence_id: str, entry: dict[str, Any], settings: Settings,
          args: argparse.Namespace) -> Copied | None:
    """One item against one replica: what it lacks (and, with --verify, what is wrong there); copied now
    unless only the status was asked for."""
    with replica_errors(name):
        behind = lag(store, replica, evidence_id)
        if behind.behind or behind.problems:
            entry["behind"].append(behind.as_json())
        if args.verify:
            entry["problems"] += [{"evidence_id": evidence_id, "problem": problem}
                                  for problem in verify_replica(store, replica, evidence_id)]
    if args.status or not behind.behind:
        return None
    with progress_bar(store.evidence(evidence_id).get("size"), f"{name} {evidence_id[:12]}") as bar:
        copied = replicate(store, replica, name, evidence_id, actor=settings.actor, work=settings.work_dir,
                           progress=bar)
    entry["copied"].append({"evidence_id": evidence_id, "original": copied.original, "runs": copied.runs,
                            "custody_events": len(copied.events), "stamps": copied.stamps})
    return copied


def _print(report: dict[str, Any], status: bool) -> None:
    for name, entry in report.items():
        if "unreachable" in entry:
            print(f"PROBLEM {name}: unreachable: {printable(entry['unreachable'])}")
            continue
        for copied in entry["copied"]:
            what = ["original"] * copied["original"] + [f"run {r}" for r in copied["runs"]]
            what.append(f"{copied['custody_events']} custody events")
            what += [f"{copied['stamps']} time-stamps"] if copied["stamps"] else []
            print(f"copied  {name}: {copied['evidence_id'][:12]}  {', '.join(what)}")
        for failed in entry["failed"]:
            print(f"PROBLEM {name}: {failed['evidence_id'][:12]}  {printable(failed['reason'])}")
        for found in entry["problems"]:
            print(f"PROBLEM {name}: {found['evidence_id'][:12]}  {printable(found['problem'])}")
        for behind in entry["behind"] if not status else []:
            for problem in behind["problems"]:
                print(f"PROBLEM {name}: {behind['evidence_id'][:12]}  {printable(problem)}")
        if status:
            for behind in entry["behind"]:
                what = ["original"] * behind["original"] + [f"run {r}" for r in behind["runs"]]
                what.append(f"{behind['custody_events']} custody events")
                what += [f"{behind['stamps']} time-stamps"] if behind["stamps"] else []
                print(f"behind  {name}: {behind['evidence_id'][:12]}  lacks {', '.join(what)}"
                      + "".join(f"; {printable(p)}" for p in behind["problems"]))
        signing_files = entry.get("signing_files")
        if signing_files:
            print(f"{'behind ' if status else 'copied '} {name}: the signing set, {signing_files} file(s)")
        print(f"{name}: {'level' if entry['level'] else 'BEHIND'} ({entry['items']} items)")


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    replica = open_replica(settings, args.source, args.master_key())
    store = open_store(settings, args.master_key())
    with progress_bar(None, f"restore from {args.source}") as bar:
        restored, failed = restore(replica, store, args.source, actor=settings.actor, work=settings.work_dir,
                                   progress=bar)
    with replica_errors(args.source):
        put = signing_set.put_back(replica.signing_files(), settings)
    if args.json:
        print_json({"ok": not failed, "restored": restored, "failed": failed, "from": args.source, "signing": put})
    else:
        for evidence_id in restored:
            print(f"restored {evidence_id}")
        if put["trial_ca"] or put["anchors"]:
            print("restored the signing set: " + ", ".join(["the trial CA"] * put["trial_ca"]
                                                           + [f"{len(put['anchors'])} trust anchor(s)"]))
        for evidence_id, reason in failed.items():
            print(f"PROBLEM  {evidence_id}  {printable(reason)}")
        print(f"{len(restored)} items restored from {args.source}" + (
            f"; {len(failed)} failed: run the same command again once the cause is fixed (what is restored is "
            "kept), or restore them from another replica" if failed else "; now run 'evidence audit'"))
    return EXIT_PROBLEM if failed else EXIT_OK
