"""Commands about processing: worker, watch, status, dead-letters, requeue."""

from __future__ import annotations

import argparse
import signal
import sys
import textwrap
import threading
from pathlib import Path

from worker.backends import open_queue, queue_sealing
from worker.cli import wiring
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.config import Settings
from worker.errors import EvidenceError
from worker.jobs.queue import DEAD
from worker.jobs.requeue import every_lost_job, requeue
from worker.processing import signing


def register(command) -> None:
    p = command("watch", "ingest files dropped into a folder",
                "Ingest every file in INBOX once its size has stopped changing and no process holds it open\n"
                "for writing, then move it to INBOX/.ingested/. A file that fails stays put, with a note\n"
                "in INBOX/.error/. Links are never followed; nothing in the inbox is deleted or overwritten.\n"
                "With --once: exit 1 when a file was refused or noted, or left because it may still be arriving.")
    p.add_argument("inbox", type=Path, metavar="INBOX")
    wiring.intake_options(p)
    p.add_argument("--once", action="store_true", help="ingest what is there now, then exit")
    p.set_defaults(handler=cmd_watch)

    p = command("worker", "process queued jobs",
                "Lease jobs from the queue and run them. SIGTERM/Ctrl-C: finish the current job and exit;\n"
                "a second signal gives the job back to the queue at once. A full disk pauses work (the job\n"
                "goes back without counting an attempt); with --once the worker then exits 1.")
    p.add_argument("--once", action="store_true", help="process every due job, then exit 0")
    p.add_argument("--inbox", type=Path, help="also watch this folder for uploads (see 'evidence watch')")
    wiring.intake_options(p)
    p.set_defaults(handler=cmd_worker)

    p = command("status", "queue counts and dead letters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = command("dead-letters", "list jobs that failed for good; retry one or all",
                "List dead-lettered jobs with their reasons. --retry JOB or --retry-all put them back in\n"
                "the queue with a fresh set of attempts (after fixing what the reason names).")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--retry", metavar="JOB", help="put this dead-lettered job back in the queue")
    group.add_argument("--retry-all", action="store_true", help="put every dead-lettered job back in the queue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_dead_letters)

    p = command("requeue", "queue again the jobs a lost queue file held",
                "Every job is logged in its item's custody chain when it is queued. --missing finds the\n"
                "jobs whose run never committed and that the queue no longer holds (its file was deleted,\n"
                "replaced or damaged, or it could not take the job when it was asked), and queues each\n"
                "again under its own id. Every worker does this by itself when it starts.")
    p.add_argument("--missing", action="store_true", required=True, help="queue every lost job again")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_requeue)


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = wiring.store_and_queue(settings, args.master_key())
    inbox = wiring.inbox(settings, store, queue, args.inbox, args)
    if args.once:
        inbox.scan_settled()
        if inbox.waiting:
            print(f"{inbox.waiting} file(s) may still be arriving; they are left for the next run", file=sys.stderr)
        return EXIT_PROBLEM if inbox.trouble or inbox.waiting else EXIT_OK
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    inbox.watch(stop, settings.worker.poll_interval_s)
    return EXIT_OK


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    registry = wiring.checked_models(settings)
    signing.load(settings)  # bad signing credentials stop the worker here, not in the middle of a run
    store, queue = wiring.store_and_queue(settings, args.master_key())
    inbox = wiring.inbox(settings, store, queue, args.inbox, args) if args.inbox else None
    return wiring.worker(settings, store, queue, args.master_key(), inbox, registry).run(once=args.once)


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = wiring.store_and_queue(settings, args.master_key(), read_only=True)
    report = {
        "queue": queue.counts(),
        "dead_letters": [job.to_json() for job in queue.jobs(DEAD)],
        "evidence_items": len(store.evidence_ids()),
        "store": settings.store_root,
    }
    if args.json:
        print_json(report)
        return EXIT_OK
    print("queue   " + "  ".join(f"{state} {n}" for state, n in report["queue"].items()))
    print(f"store   {report['evidence_items']} evidence items in {printable(settings.store_root)}")
    if report["dead_letters"]:
        print("dead letters (evidence dead-letters --retry JOB):")
        for job in report["dead_letters"]:
            print(f"  {job['job_id']}  {job['evidence_id'][:12]}  {job['pipeline']}  "
                  f"after {job['attempts']} attempt(s): {printable(job['reason'])}")
    return EXIT_OK


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    changes = bool(args.retry or args.retry_all)
    queue = open_queue(settings, queue_sealing(settings, args.master_key()), read_only=not changes)
    if args.retry or args.retry_all:
        ids = [args.retry] if args.retry else [job.id for job in queue.jobs(DEAD, limit=1_000_000)]
        retried = [queue.retry_dead(job_id).to_json() for job_id in ids]
        if args.json:
            print_json({"retried": retried})
        else:
            print(f"{len(retried)} dead-lettered job(s) queued again" if args.retry_all
                  else f"job {args.retry} is queued again")
        return EXIT_OK
    jobs = [job.to_json() for job in queue.jobs(DEAD, limit=1_000_000)]
    if args.json:
        print_json({"dead_letters": jobs})
        return EXIT_OK
    if not jobs:
        print("no dead letters")
    for job in jobs:
        print(f"{job['job_id']}  {job['evidence_id']}  {job['pipeline']}  attempts {job['attempts']}")
        print(textwrap.indent(textwrap.fill(printable(job["reason"] or ""), 100), "    "))
    return EXIT_OK


def cmd_requeue(settings: Settings, args: argparse.Namespace) -> int:
    store, queue = wiring.store_and_queue(settings, args.master_key())
    queued, failed = [], []
    for lost in every_lost_job(store, queue):
        try:
            job = requeue(store, queue, lost, settings.actor)
        except EvidenceError as exc:
            failed.append({"evidence_id": lost.evidence_id, "job_id": lost.job_id, "error": str(exc)})
            continue
        queued.append(job.to_json())
    if args.json:
        print_json({"requeued": queued, "failed": failed})
    else:
        for job in queued:
            print(f"queued again: job {job['job_id']}  {job['evidence_id'][:12]}  {job['pipeline']}")
        for item in failed:
            print(f"NOT QUEUED  job {item['job_id']}: {printable(item['error'])}")
        print(f"{len(queued)} lost job(s) queued again" if queued or failed else "no job was lost")
    return EXIT_PROBLEM if failed else EXIT_OK
