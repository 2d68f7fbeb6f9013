"""SqliteQueue: the JobQueue in one SQLite file (the embedded default).

WAL mode and ``BEGIN IMMEDIATE`` make a lease a single atomic claim, so any
number of worker processes on one machine can share the file. Time is wall
clock seconds; a lease that is not renewed by a heartbeat expires and the job
is handed out again (a crashed worker's job comes back by itself).

The file is owner-only (SQLite gives its WAL files the same mode) and never
reached through a link. Every SQLite failure becomes one QueueUnavailable
line that says what to do; a reader on a full disk, where SQLite cannot
create its WAL files, reads the file as it stands instead.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.pipeline import canonical_json
from worker.encryption.sealing import PLAIN, Sealing
from worker.errors import NotFound, QueueUnavailable
from worker.fs.directory import PRIVATE_FILE, Directory
from worker.jobs.queue import DEAD, DONE, LEASED, QUEUED, Job, JobQueue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    evidence_id   TEXT NOT NULL,
    pipeline      TEXT NOT NULL,
    params        TEXT NOT NULL,
    nonce         TEXT,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    available_at  REAL NOT NULL,
    lease_token   TEXT,
    lease_expires REAL,
    last_error    TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, available_at);
CREATE INDEX IF NOT EXISTS jobs_same ON jobs (evidence_id, pipeline, state);
"""


_ADVICE = {
    "SQLITE_NOTADB": "it is damaged or not a job queue: move it aside; 'evidence requeue --missing' then "
                     "rebuilds the jobs from the custody logs",
    "SQLITE_CORRUPT": "it is damaged: move it aside; 'evidence requeue --missing' then rebuilds the jobs "
                      "from the custody logs",
    "SQLITE_FULL": "the disk is full: free space; no job is lost",
    "SQLITE_CANTOPEN": "SQLite cannot open it or create its WAL files beside it: check that its folder is "
                       "writable by this account and that the disk is not full",
    "SQLITE_READONLY": "it, or its folder, is read-only for this account",
    "SQLITE_BUSY": "another process holds it locked for too long",
    "SQLITE_IOERR": "a read or write failed: the disk may be full or failing",
}


def _translated(method: Callable) -> Callable:
    """SQLite errors as one line naming the queue file and what to do."""

    @functools.wraps(method)
    def wrapper(self: SqliteQueue, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", None) or ""
            advice = _ADVICE.get(name) or _ADVICE.get("_".join(name.split("_")[:2]), "")
            raise QueueUnavailable(f"the job queue {self.path} cannot be used ({exc})"
                                   + (f": {advice}" if advice else "")) from None
    return wrapper


_ID, _ERROR = b"queue evidence id", b"queue error"


class SqliteQueue(JobQueue):
    @_translated
    def __init__(self, path: Path, *, max_attempts: int = 5, backoff_base_s: float = 30.0,
                 backoff_max_s: float = 3600.0, clock: Callable[[], float] = time.time, read_only: bool = False,
                 sealing: Sealing = PLAIN):
        self.path = Path(os.path.abspath(path))
        # With encryption on, evidence ids and error texts are kept as tokens: a seized queue file tells
        # neither which videos are held nor what went wrong with them.
        self.sealing = sealing
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self.read_only = read_only
        self._local = threading.local()  # sqlite3 connections belong to one thread
        with Directory.open(self.path.parent, create=True) as folder:
            if not folder.exists(self.path.name):
                try:  # created here so that it, and the WAL files SQLite copies its mode to, are owner-only
                    os.close(folder.open_fd(self.path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
                except FileExistsError:
                    pass
            os.close(folder.open_fd(self.path.name, os.O_RDONLY))  # LinkRefused if a link stands there
        db = self._connection()
        self.fresh = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone()[0] == 0
        if self.fresh:
            db.executescript(_SCHEMA)

    def _connect(self, immutable: bool) -> sqlite3.Connection:
        if immutable:
            uri = f"file:{urllib.parse.quote(str(self.path))}?immutable=1"
            return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a job acked is a job that stays acked
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = self._connect(immutable=False)
            except sqlite3.OperationalError:
                if not self.read_only:
                    raise
                db = self._connect(immutable=True)  # a full disk: SQLite cannot make its WAL files
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _id(self, evidence_id: str) -> str:
        return self.sealing.token(evidence_id, _ID)

    def _error(self, stored: str | None) -> str | None:
        return None if stored is None else self.sealing.untoken(stored, _ERROR)

    def _job(self, row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"], evidence_id=self.sealing.untoken(row["evidence_id"], _ID), pipeline=row["pipeline"],
            params=json.loads(row["params"]), nonce=row["nonce"], state=row["state"],
            attempts=row["attempts"], max_attempts=row["max_attempts"], lease_token=row["lease_token"],
            last_error=self._error(row["last_error"]), created_at=row["created_at"], updated_at=row["updated_at"],
        )

    @_translated
    def waiting(self, evidence_id: str, pipeline: str, params: Mapping[str, Any], nonce: str | None) -> Job | None:
        row = self._connection().execute(
            "SELECT * FROM jobs WHERE evidence_id=? AND pipeline=? AND params=? AND nonce IS ? "
            "AND state IN ('queued', 'leased')",
            (self._id(evidence_id), pipeline, canonical_json(dict(params)).decode("utf-8"), nonce),
        ).fetchone()
        return None if row is None else self._job(row)

    @_translated
    def enqueue(self, evidence_id: str, pipeline: str, params: Mapping[str, Any] | None = None,
                nonce: str | None = None, job_id: str | None = None) -> tuple[Job, bool]:
        params_json = canonical_json(dict(params or {})).decode("utf-8")
        now = self.clock()
        with self._transaction() as db:
            same = db.execute(
                "SELECT * FROM jobs WHERE (evidence_id=? AND pipeline=? AND params=? AND nonce IS ? "
                "AND state IN ('queued', 'leased')) OR id=?",
                (self._id(evidence_id), pipeline, params_json, nonce, job_id),
            ).fetchone()
            if same is not None:
                return self._job(same), False
            job_id = job_id or uuid.uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, evidence_id, pipeline, params, nonce, state, max_attempts,"
                " available_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, self._id(evidence_id), pipeline, params_json, nonce, self.max_attempts, now, now, now),
            )
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._job(row), True

    @_translated
    def lease(self, visibility_timeout_s: float) -> Job | None:
        with self._transaction() as db:
            while True:
                now = self.clock()
                row = db.execute(
                    "SELECT * FROM jobs WHERE (state='queued' AND available_at<=?)"
                    " OR (state='leased' AND lease_expires<=?) ORDER BY available_at, created_at LIMIT 1",
                    (now, now),
                ).fetchone()
                if row is None:
                    return None
                if row["state"] == LEASED and row["attempts"] >= row["max_attempts"]:
                    # Its worker died or hung on every attempt: stop handing it out.
                    reason = (f"lease expired on attempt {row['attempts']} of {row['max_attempts']}"
                              f" (the worker died or hung); last error: {self._error(row['last_error']) or 'none'}")
                    db.execute(
                        "UPDATE jobs SET state='dead', lease_token=NULL, lease_expires=NULL, last_error=?,"
                        " updated_at=? WHERE id=?", (self.sealing.token(reason, _ERROR), now, row["id"]),
                    )
                    continue
                token = uuid.uuid4().hex
                db.execute(
                    "UPDATE jobs SET state='leased', attempts=attempts+1, lease_token=?, lease_expires=?,"
                    " updated_at=? WHERE id=?",
                    (token, now + visibility_timeout_s, now, row["id"]),
                )
                return self._job(db.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone())

    @_translated
    def _update_leased(self, job: Job, assignments: str, values: tuple) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {assignments}, updated_at=? WHERE id=? AND state='leased' AND lease_token=?",
                (*values, self.clock(), job.id, job.lease_token),
            )
            return cursor.rowcount == 1

    @_translated
    def heartbeat(self, job: Job, visibility_timeout_s: float) -> bool:
        return self._update_leased(job, "lease_expires=?", (self.clock() + visibility_timeout_s,))

    @_translated
    def ack(self, job: Job) -> bool:
        return self._update_leased(job, "state='done', lease_token=NULL, lease_expires=NULL", ())

    def backoff_s(self, attempts: int) -> float:
        return min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_max_s)

    @_translated
    def fail(self, job: Job, reason: str, *, retryable: bool) -> str:
        dead = not retryable or job.attempts >= job.max_attempts
        reason = self.sealing.token(reason, _ERROR)
        if dead:
            done = self._update_leased(
                job, "state='dead', lease_token=NULL, lease_expires=NULL, last_error=?", (reason,))
            state = DEAD
        else:
            done = self._update_leased(
                job, "state='queued', lease_token=NULL, lease_expires=NULL, last_error=?, available_at=?",
                (reason, self.clock() + self.backoff_s(job.attempts)),
            )
            state = QUEUED
        return state if done else LEASED  # lease lost: whoever holds it now decides

    @_translated
    def release(self, job: Job) -> None:
        self._update_leased(
            job, "state='queued', attempts=attempts-1, lease_token=NULL, lease_expires=NULL, available_at=?",
            (self.clock(),),
        )

    @_translated
    def counts(self) -> dict[str, int]:
        now = self.clock()
        db = self._connection()
        rows = db.execute(
            "SELECT CASE WHEN state='queued' AND available_at>? THEN 'delayed' ELSE state END AS s, count(*)"
            " FROM jobs GROUP BY s", (now,),
        ).fetchall()
        counts = {QUEUED: 0, "delayed": 0, LEASED: 0, DONE: 0, DEAD: 0}
        counts.update({row[0]: row[1] for row in rows})
        return counts

    @_translated
    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        db = self._connection()
        if state is None:
            rows = db.execute("SELECT * FROM jobs ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = db.execute("SELECT * FROM jobs WHERE state=? ORDER BY updated_at DESC LIMIT ?",
                              (state, limit)).fetchall()
        return [self._job(row) for row in rows]

    @_translated
    def get(self, job_id: str) -> Job:
        row = self._connection().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return self._job(row)

    @_translated
    def retry_dead(self, job_id: str) -> Job:
        now = self.clock()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET state='queued', attempts=0, available_at=?, updated_at=? WHERE id=? AND state='dead'",
                (now, now, job_id),
            )
            if cursor.rowcount != 1:
                raise NotFound(f"no dead-lettered job {job_id}")
            return self._job(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
