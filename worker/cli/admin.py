"""Commands for the archive as a whole: audit, config, admin, demo."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from worker.backends import open_queue, open_store
from worker.cli import wiring
from worker.cli.items import describe_item, print_item
from worker.cli.output import EXIT_OK, EXIT_PROBLEM, print_json, printable
from worker.config import EncryptionSettings, Settings
from worker.errors import QueueUnavailable
from worker.fs.permissions import exposed
from worker.intake.ingest import ingest
from worker.operations.audit import audit_store
from worker.processing import signing
from worker.record import stamps
from worker.record.store import EvidenceStore

SAMPLE_VIDEO = Path(__file__).resolve().parents[1] / "samples" / "street-walkers-1080p.mp4"


def register(command) -> None:
    p = command("audit", "re-hash every original; verify custody chains, run outputs, jobs and permissions",
                "Re-hash every original, verify every custody chain and every committed run, find jobs\n"
                "the queue lost, and report anything another local account could read. The result is\n"
                "logged in each item's chain; nothing is repaired. Exit 1 on any problem.")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_audit)

    p = command("config", "settings")
    p.add_argument("action", choices=["show"], help="show: the effective settings, secrets redacted")
    p.set_defaults(handler=cmd_config)

    p = command("admin", "deployment: create or check the S3 bucket, the SQS queues and the upload notification",
                "init-s3 (run once, as an administrator): the bucket of [store] bucket with versioning and\n"
                "Object Lock, public access blocked, uploads under [queue] upload_prefix expiring after a week\n"
                "(they are unmasked copies, stored as evidence on arrival); the queue [queue] queue_name with\n"
                "its dead-letter queue; and the bucket's notification of uploads to the queue. What exists is\n"
                "checked, never loosened: a bucket without Object Lock is refused (it cannot be added later).")
    p.add_argument("action", choices=["init-s3"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_admin)

    p = command("demo", "ingest the bundled sample video, process it and show the result",
                "Ingest the bundled sample video, process it and show the result. With --encrypted KEY_FILE\n"
                "everything stored is sealed under the key in KEY_FILE (made there when missing: keep it\n"
                "apart from the data); use a new EVIDENCE_HOME for it, since an unencrypted store is\n"
                "never encrypted in place.")
    p.add_argument("--encrypted", type=Path, metavar="KEY_FILE", help="seal everything under this key file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_demo)


def _store_findings(settings: Settings, store: EvidenceStore) -> dict[str, list[str]]:
    queue = settings.queue_path
    problems = exposed(settings.home, recursive=False) + store.exposure()
    problems += exposed(queue, Path(f"{queue}-wal"), Path(f"{queue}-shm"), settings.work_dir)
    notes = [f"partial upload left by a process that stopped mid-copy (the next worker start removes it): {path}"
             for path in store.partial_uploads()]
    # Every start trusts a model's last full hash while its files' stat is unchanged; the audit re-hashes them.
    problems += wiring.models(settings).damaged()
    return {"problems": problems, "notes": notes}


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings, args.master_key())
    found = _store_findings(settings, store)
    try:
        queue = open_queue(settings, store.sealing, read_only=True)
    except QueueUnavailable as exc:
        queue = None
        found["problems"].append(f"{exc}; jobs were not checked")
    if not args.json:
        for line in found["problems"]:
            print(f"PROBLEM store: {printable(line)}")
        for line in found["notes"]:
            print(f"note    store: {printable(line)}")
    items = []
    roots = stamps.roots_from(signing.anchors(settings))
    for item in audit_store(store, queue, settings.actor, roots):
        items.append(item)
        if not args.json:
            state = "ok     " if item.ok else "PROBLEM"
            print(f"{state} {item.evidence_id}  {item.custody_events} custody events, {item.runs_checked} runs")
            for line in item.problems:
                print(f"          - {printable(line)}")
            for line in item.notes:
                print(f"          note: {printable(line)}")
    problems = sum(not item.ok for item in items)
    ok = problems == 0 and not found["problems"]
    if args.json:
        print_json({"ok": ok, "items": len(items), "items_with_problems": problems, "store": found,
                    "results": [item.to_json() for item in items]})
    else:
        print(f"audit: {len(items)} items, {problems} with problems"
              + (f"; {len(found['problems'])} store problems" if found["problems"] else ""))
    return EXIT_OK if ok else EXIT_PROBLEM


def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from worker import aws
    from worker.backends.s3.provision import init_s3

    s3 = aws.client("s3", region=settings.store.region, endpoint_url=settings.store.endpoint_url)
    sqs = aws.client("sqs", region=settings.queue.region, endpoint_url=settings.queue.endpoint_url)
    done = init_s3(settings, s3, sqs)
    if args.json:
        print_json({"done": done})
    else:
        for line in done:
            print(printable(line))
    return EXIT_OK


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print_json(settings.redacted())
    return EXIT_OK


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    if args.encrypted:
        from worker.encryption import keys

        if not args.encrypted.exists():
            keys.new_key_file(args.encrypted)
        settings = settings.model_copy(update={"encryption": EncryptionSettings(
            key_source="file", key_file=args.encrypted.resolve())})
    store, queue = wiring.store_and_queue(settings, args.master_key())
    result = ingest(store, queue, SAMPLE_VIDEO, actor=settings.actor, case="demo",
                    collected_by="evidence demo", note="bundled sample video (MIT, facenet-pytorch examples)")
    wiring.worker(settings, store, queue, args.master_key()).run(once=True)
    report: dict[str, Any] = describe_item(store, result.evidence_id, restricted=False, actor=settings.actor)
    report["queue"] = queue.counts()
    if args.json:
        print_json(report)
        return EXIT_OK
    print_item(report)
    print(f"\nstore      {settings.store_root}\nqueue      {settings.queue_path}  ({report['queue']})")
    if args.encrypted:
        print(f"sealed     under {args.encrypted.resolve()}; for the commands below first run\n"
              f"           export EVIDENCE_ENCRYPTION__KEY_SOURCE=file "
              f"EVIDENCE_ENCRYPTION__KEY_FILE={args.encrypted.resolve()}")
    print(f"next       evidence show {result.evidence_id[:12]} --json;  evidence audit")
    print(f"           evidence export {result.evidence_id[:12]} --from 00:00:01 --to 00:00:03 "
          '--recipient "Prosecutor X" --out clip-demo;  evidence verify clip-demo/clip.mp4 '
          "--trust-anchors clip-demo/trust-anchor.pem")
    committed = any(run["status"] == "committed" for run in report["runs"])
    return EXIT_OK if committed else EXIT_PROBLEM
