"""Errors of the service around the pipelines."""


class EvidenceError(Exception):
    """Base of everything this package raises on purpose."""

    retryable = False


class ConfigError(EvidenceError):
    """Settings that cannot be used; the message names the bad key."""


class NotFound(EvidenceError):
    """No evidence item, run or job with that id."""


class IntegrityError(EvidenceError):
    """Stored bytes no longer match their recorded SHA-256. Never retried: a person must look."""


class CustodyError(EvidenceError):
    """A custody log that cannot be appended to safely (damaged or tampered)."""


class BadSource(EvidenceError):
    """An ingest source that is not a regular file (a directory, a device, a link in the inbox)."""


class QueueUnavailable(EvidenceError):
    """The job queue cannot be opened or used (damaged file, full disk, missing WAL files)."""

    retryable = True


class JobError(EvidenceError):
    """A job that can never run as asked (unknown pipeline, bad parameters, unknown evidence)."""


class LeaseLost(EvidenceError):
    """This worker no longer holds the job's lease; another worker may have it. Do not commit."""

    retryable = True
