"""SqsQueue: the JobQueue on Amazon SQS (or an SQS-speaking server), for many workers on many machines.

A message is a job (our versioned JSON) or an S3 event notification: an
upload under the upload prefix becomes an ``upload`` job, which the worker
turns into a stored original and an ``intake`` job with no CLI call. The
receipt handle is the lease; heartbeats extend its visibility; a failure
waits out its backoff invisible; a job out of attempts, a message that is
not one of ours, or an event outside the upload prefix goes to the
dead-letter queue with its reason (the queue's redrive policy is the net
under that, for workers that die before they can say why).

SQS cannot be searched: duplicate jobs are not merged on enqueue (runs are
idempotent, so a duplicate delivery commits nothing new), and a job is
found by id only among the dead letters.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from worker.aws import error_code
from worker.encryption.sealing import PLAIN, Sealing
from worker.errors import EvidenceError, IntegrityError, NotFound, QueueUnavailable
from worker.jobs.queue import DEAD, QUEUED, Job, JobKind, JobQueue

log = logging.getLogger("evidence.queue.sqs")

SCHEMA = "evidence-worker/job/1"
UPLOAD = JobKind.UPLOAD.value    # what a job made from an S3 upload event names as its pipeline
_MAX_DELAY_S = 12 * 3600         # SQS's longest visibility timeout


_JOB, _REASON = b"sqs job message", b"sqs dead-letter reason"


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class SqsQueue(JobQueue):
    knows_every_job = False   # jobs cannot be listed: lost-job recovery from custody does not apply

    def __init__(self, client: Any, queue_url: str, *, max_attempts: int = 5, backoff_base_s: float = 30.0,
                 backoff_max_s: float = 3600.0, wait_s: int = 20, upload_prefix: str = "incoming/",
                 upload_bucket: str | None = None, sealing: Sealing = PLAIN):
        self.client, self.url = client, queue_url
        # With encryption on, what a job message says (evidence id, parameters) and why a job died are sealed:
        # the queue's operator sees only that there is work.
        self.sealing = sealing
        self.max_attempts, self.backoff_base_s, self.backoff_max_s = max_attempts, backoff_base_s, backoff_max_s
        self.wait_s, self.upload_prefix, self.upload_bucket = wait_s, upload_prefix, upload_bucket
        try:
            attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
            policy = json.loads(attributes.get("Attributes", {}).get("RedrivePolicy") or "{}")
            arn = policy.get("deadLetterTargetArn")
            self.dead_url = client.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"] if arn else None
        except Exception as exc:  # noqa: BLE001 - botocore raises one ClientError class per code
            raise QueueUnavailable(f"the SQS queue {queue_url} (or its dead-letter queue) cannot be used: {exc}") \
                from None
        if self.dead_url is None:
            log.warning("the SQS queue has no dead-letter queue (redrive policy): dead jobs are only logged",
                        extra={"queue": queue_url})

    # -- messages -----------------------------------------------------------

    def _call(self, name: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, name)(**kwargs)
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) in ("ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"):
                raise LookupError(error_code(exc)) from None
            raise QueueUnavailable(f"SQS {name} failed: {exc}") from None

    def enqueue(self, evidence_id: str, pipeline: str, params: Mapping[str, Any] | None = None,
                nonce: str | None = None, job_id: str | None = None) -> tuple[Job, bool]:
        job = Job(id=job_id or uuid.uuid4().hex, evidence_id=evidence_id, pipeline=pipeline, params=dict(params or {}),
                  nonce=nonce, max_attempts=self.max_attempts, created_at=time.time(), updated_at=time.time())
        self._call("send_message", QueueUrl=self.url, MessageBody=self._body(job))
        return job, True

    def waiting(self, evidence_id: str, pipeline: str, params: Mapping[str, Any], nonce: str | None) -> Job | None:
        return None   # SQS cannot be searched; a duplicate is harmless (the run is committed once)

    def _jobs_in(self, message: Mapping[str, Any]) -> Job | str | None:
        """The job a message carries; why it carries none that may run; None for S3's test event."""
        try:
            return self._parse(message)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:   # whatever its shape, never a crash
            return f"the message is malformed ({type(exc).__name__}: {exc})"

    def _opened(self, body: dict[str, Any]) -> dict[str, Any]:
        """A job message with its sealed part opened; only the release count may stand outside it.

        With encryption on, a job message that is not sealed (or sealed for
        another job id) is refused: whoever can send to the queue cannot
        have a job run that the worker did not seal.
        """
        if body.get("schema") != SCHEMA or not self.sealing.enabled:
            return body
        if "sealed" not in body:
            raise IntegrityError("a job message that is not sealed, although encryption is on")
        what = _JOB + str(body.get("job_id", "")).encode()
        inner = _json(self.sealing.open_bytes(base64.b64decode(str(body["sealed"]), validate=True), what).decode())
        if not isinstance(inner, dict):
            raise ValueError("the sealed part is not a JSON object")
        return {**inner, **({"released": body["released"]} if "released" in body else {})}

    def _parse(self, message: Mapping[str, Any]) -> Job | str | None:
        received = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        body = _json(message["Body"])
        if not isinstance(body, dict):
            return "the message is not JSON" if body is None else "the message is not a JSON object"
        try:
            body = self._opened(body)
        except EvidenceError as exc:
            return f"the job message's sealed part does not open: {exc}"
        # Receipts before a release (give-back) are not attempts: a full disk must not use them up.
        attempts = max(received - int(body.get("released", 0) if body.get("schema") == SCHEMA else 0), 1)
        common = {"state": "leased", "attempts": attempts, "max_attempts": self.max_attempts,
                  "lease_token": message["ReceiptHandle"], "updated_at": time.time()}
        if body.get("Event") == "s3:TestEvent":
            return None
        if body.get("schema") == SCHEMA:
            if not all(isinstance(body.get(k), str) and body.get(k) for k in ("job_id", "evidence_id", "pipeline")):
                return "the job message lacks job_id, evidence_id or pipeline"
            if body["pipeline"] == UPLOAD:
                return "a job message may not ask for an upload (only S3's own events may)"
            if not isinstance(body.get("params") or {}, dict) or not isinstance(body.get("nonce"), str | None):
                return "the job message's params or nonce have the wrong type"
            return Job(id=body["job_id"], evidence_id=body["evidence_id"], pipeline=body["pipeline"],
                       params=dict(body.get("params") or {}), nonce=body.get("nonce"), **common)
        records = body.get("Records")
        if isinstance(records, list):
            if len(records) != 1:
                return f"an S3 event with {len(records)} records (one is expected)"
            record = records[0]
            if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
                return f"an S3 event of another kind ({record.get('eventName')!r})"
            bucket = str(record["s3"]["bucket"]["name"])
            obj = record["s3"]["object"]
            key = urllib.parse.unquote_plus(str(obj["key"]))   # keys arrive URL-encoded, "+" for spaces
            if self.upload_bucket is None or bucket != self.upload_bucket:
                return f"an upload event for bucket {bucket!r}, not the evidence bucket"
            if not key.startswith(self.upload_prefix) or key.endswith("/"):
                return f"an upload event for {key!r}, outside the upload prefix {self.upload_prefix!r}"
            size, version = obj.get("size"), obj.get("versionId")
            return Job(id=f"upload-{uuid.uuid5(uuid.NAMESPACE_URL, f's3://{bucket}/{key}?{version}').hex}",
                       evidence_id="", pipeline=UPLOAD, params={
                           "bucket": bucket, "key": key, "size": size if isinstance(size, int) else None,
                           "version": str(version) if version else None, "event": message["Body"]}, **common)
        return "the message is neither a job of this software nor an S3 event"

    def lease(self, visibility_timeout_s: float) -> Job | None:
        while True:
            answer = self._call("receive_message", QueueUrl=self.url, MaxNumberOfMessages=1,
                                WaitTimeSeconds=self.wait_s, VisibilityTimeout=int(visibility_timeout_s),
                                MessageSystemAttributeNames=["ApproximateReceiveCount"])
            messages = answer.get("Messages") or []
            if not messages:
                return None
            found = self._jobs_in(messages[0])
            if isinstance(found, str):
                self._bury(messages[0]["Body"], found, messages[0]["ReceiptHandle"])
                continue   # a bad message never stops the worker
            if found is None:
                self._forget(messages[0]["ReceiptHandle"])
                continue   # the bucket's test notification
            return found

    def _bury(self, body: str, reason: str, receipt: str) -> None:
        log.error("message dead-lettered", extra={"reason": reason})
        if self.dead_url:
            wrapped = {"schema": "evidence-worker/dead-letter/1", "reason": self.sealing.token(reason, _REASON),
                       "dead_at": time.time(), "message": body}
            self._call("send_message", QueueUrl=self.dead_url, MessageBody=json.dumps(wrapped))
        self._forget(receipt)

    def _forget(self, receipt: str | None) -> bool:
        try:
            self._call("delete_message", QueueUrl=self.url, ReceiptHandle=receipt)
        except LookupError:   # the lease ran out meanwhile: the message will come round again
            return False
        return True

    def heartbeat(self, job: Job, visibility_timeout_s: float) -> bool:
        try:
            self._call("change_message_visibility", QueueUrl=self.url, ReceiptHandle=job.lease_token,
                       VisibilityTimeout=int(visibility_timeout_s))
        except LookupError:
            return False
        return True

    def ack(self, job: Job) -> bool:
        return self._forget(job.lease_token)

    def backoff_s(self, attempts: int) -> float:
        return min(self.backoff_base_s * 2 ** max(attempts - 1, 0), self.backoff_max_s, _MAX_DELAY_S)

    def _body(self, job: Job, released: int = 0) -> str:
        """The message that carries ``job`` again: an upload as the S3 event it came as."""
        if job.kind is JobKind.UPLOAD:
            return str(job.params["event"])
        body: dict[str, Any] = {"schema": SCHEMA, "job_id": job.id, "evidence_id": job.evidence_id,
                                "pipeline": job.pipeline, "params": dict(job.params), "nonce": job.nonce}
        if self.sealing.enabled:
            sealed = self.sealing.seal_bytes(json.dumps(body, sort_keys=True).encode(), _JOB + job.id.encode())
            body = {"schema": SCHEMA, "job_id": job.id, "sealed": base64.b64encode(sealed).decode("ascii")}
        if released:
            body["released"] = released
        return json.dumps(body, sort_keys=True)

    def fail(self, job: Job, reason: str, *, retryable: bool) -> str:
        if retryable and job.attempts < self.max_attempts:
            try:   # back in the queue once its backoff has passed
                self._call("change_message_visibility", QueueUrl=self.url, ReceiptHandle=job.lease_token,
                           VisibilityTimeout=int(self.backoff_s(job.attempts)))
            except LookupError:
                pass
            return QUEUED
        self._bury(self._body(job), reason, job.lease_token)
        return DEAD

    def release(self, job: Job) -> None:
        # SQS counts every receipt, and its redrive policy would dead-letter a job given back often enough
        # (a long full disk): the job goes back as a new message that says how many receipts were not tries.
        self._call("send_message", QueueUrl=self.url, MessageBody=self._body(job, released=job.attempts - 1))
        self._forget(job.lease_token)

    def _approximate(self, url: str) -> dict[str, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        found = self._call("get_queue_attributes", QueueUrl=url, AttributeNames=names)["Attributes"]
        return {name: int(found.get(name, 0)) for name in names}

    def counts(self) -> dict[str, int]:
        main = self._approximate(self.url)
        dead = self._approximate(self.dead_url)["ApproximateNumberOfMessages"] if self.dead_url else 0
        # SQS counts are approximate, and leased and backing-off jobs are both "not visible" to it.
        return {"queued": main["ApproximateNumberOfMessages"], "delayed": main["ApproximateNumberOfMessagesDelayed"],
                "leased": main["ApproximateNumberOfMessagesNotVisible"], "done": 0, "dead": dead}

    def _dead_letters(self) -> list[tuple[Job, str]]:
        """Dead letters, each with its receipt handle (they stay in the queue: peeked, visible again at once)."""
        if not self.dead_url:
            return []
        found, seen = [], set()
        for _ in range(10):
            answer = self._call("receive_message", QueueUrl=self.dead_url, MaxNumberOfMessages=10,
                                VisibilityTimeout=0, WaitTimeSeconds=0)
            batch = answer.get("Messages") or []
            if not batch:
                break
            for message in batch:
                if message["MessageId"] in seen:
                    continue
                seen.add(message["MessageId"])
                found.append((self._dead_job(message), message["ReceiptHandle"]))
        return found

    def _dead_job(self, message: Mapping[str, Any]) -> Job:
        wrapped = _json(message["Body"])   # ours: {"reason", "message"}; else moved here by the redrive policy
        ours = isinstance(wrapped, dict) and wrapped.get("schema") == "evidence-worker/dead-letter/1"
        raw = str(wrapped.get("message", "")) if ours else message["Body"]
        inner = _json(raw)
        try:
            inner = self._opened(inner) if isinstance(inner, dict) else {}
            reason = self.sealing.untoken(str(wrapped["reason"]), _REASON) if ours else None
        except (EvidenceError, ValueError) as exc:
            inner, reason = {}, f"a dead letter that does not open: {exc}"
        if isinstance(inner.get("Records"), list):   # an upload event: retried as the event it was
            return Job(id=f"upload-{message['MessageId']}", evidence_id="", pipeline=UPLOAD,
                       params={"event": raw}, state=DEAD, max_attempts=self.max_attempts,
                       last_error=reason or "moved here by the queue's redrive policy (a worker died with it)")
        return Job(id=str(inner.get("job_id") or message["MessageId"]), evidence_id=str(inner.get("evidence_id", "")),
                   pipeline=str(inner.get("pipeline", "?")),
                   params=inner["params"] if isinstance(inner.get("params"), dict) else {},
                   nonce=inner.get("nonce"), state=DEAD, max_attempts=self.max_attempts,
                   last_error=reason or "moved here by the queue's redrive policy (a worker died with it)")

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        if state not in (None, DEAD):
            return []   # SQS shows no other job until it is received
        return [job for job, _ in self._dead_letters()][:limit]

    def get(self, job_id: str) -> Job:
        for job, _ in self._dead_letters():
            if job.id == job_id:
                return job
        raise NotFound(f"no dead-lettered job {job_id} (SQS finds jobs by id only among the dead letters)")

    def retry_dead(self, job_id: str) -> Job:
        for job, receipt in self._dead_letters():
            if job.id == job_id:
                if not job.evidence_id and job.kind is not JobKind.UPLOAD:
                    raise NotFound(f"dead letter {job_id} is not a job of this software; it cannot be retried")
                self._call("send_message", QueueUrl=self.url, MessageBody=self._body(job))
                self._call("delete_message", QueueUrl=self.dead_url, ReceiptHandle=receipt)
                return Job(**{**job.__dict__, "state": QUEUED, "attempts": 0, "last_error": None})
        raise NotFound(f"no dead-lettered job {job_id}")
