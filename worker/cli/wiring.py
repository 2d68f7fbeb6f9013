"""The store, queue, runner, inbox and worker the settings describe."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.registry import Registry
from worker.backends import open_queue, open_replica, open_store, open_uploads
from worker.config import Settings
from worker.encryption.envelope import MasterKey
from worker.intake.inbox import Inbox
from worker.intake.ingest import ingest_handle, parse_languages
from worker.jobs.queue import JobQueue
from worker.processing import signing, signing_set
from worker.processing.replication import Replicas
from worker.processing.runner import Runner
from worker.processing.staff import Roster
from worker.processing.worker import Worker
from worker.record.store import EvidenceStore

log = logging.getLogger("evidence.cli")


def store_and_queue(settings: Settings, key: MasterKey | None, *,
                    read_only: bool = False) -> tuple[EvidenceStore, JobQueue]:
    store = open_store(settings, key)
    queue = open_queue(settings, store.sealing, read_only=read_only)
    if queue.fresh and store.evidence_ids():
        log.warning("the job queue was just created, but the store already holds evidence: if an earlier queue "
                    "was lost, its jobs are queued again by the next worker start or 'evidence requeue --missing'",
                    extra={"queue": str(settings.queue_path)})
    return store, queue


def intake_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--case", help="case or matter this footage belongs to")
    parser.add_argument("--collected-by", help="who recorded or collected it (a name or a team code)")
    parser.add_argument("--languages", default="", help="spoken languages, ISO 639 codes: ru,ce")
    parser.add_argument("--note", help="free text kept with the intake record")


def models(settings: Settings) -> Registry:
    """The model registry the settings describe: the package's manifest, the cache, the operator's models."""
    return Registry(settings.models.dir, local=settings.local_models)


def checked_models(settings: Settings) -> Registry:
    """The registry, with every model the intake pipeline would load loaded and verified now: a worker
    with a missing or broken model refuses to start with the reason, instead of failing every job later."""
    from pipelines import registry as pipelines

    intake = pipelines.get("intake")
    registry = models(settings)
    for name in intake.models(intake.defaults):
        registry.load(name)
    return registry


def runner(settings: Settings, store: EvidenceStore, key: MasterKey | None, registry: Registry | None = None) -> Runner:
    return Runner(store, work_dir=settings.work_dir, tools=settings.tools, actor=settings.actor,
                  min_free_bytes=settings.store.min_free_bytes, models=registry or models(settings),
                  staff=Roster(settings.home, key).embeddings, signing=lambda: signing.load(settings),
                  timestamp_url=settings.signing.timestamp_url)


def inbox(settings: Settings, store: EvidenceStore, queue: JobQueue, folder: Path,
          args: argparse.Namespace) -> Inbox:
    languages = parse_languages(args.languages)

    def ingest_one(handle, name: str, shown: str):
        return ingest_handle(store, queue, handle, source=shown, name=name, actor=settings.actor, case=args.case,
                             collected_by=args.collected_by, languages=languages, note=args.note)

    w = settings.worker
    return Inbox(folder, ingest_one, store, stable_s=w.inbox_stable_s, quiet_s=w.inbox_quiet_s,
                 recheck_s=w.inbox_recheck_s, actor=settings.actor)


def worker(settings: Settings, store: EvidenceStore, queue: JobQueue, key: MasterKey | None,
           inbox_: Inbox | None = None, registry: Registry | None = None) -> Worker:
    return Worker(
        queue, runner(settings, store, key, registry), visibility_timeout_s=settings.queue.visibility_timeout_s,
        heartbeat_interval_s=settings.heartbeat_interval_s, poll_interval_s=settings.worker.poll_interval_s,
        disk_full_pause_s=settings.worker.disk_full_pause_s, inbox=inbox_, uploads=open_uploads(settings),
        replicas=Replicas([r.name for r in settings.replicas], lambda name: open_replica(settings, name, key),
                          work=settings.work_dir, actor=settings.actor,
                          signing_set=lambda: signing_set.keepsakes(settings)) if settings.replicas else None,
    )
