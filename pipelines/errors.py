"""Errors a media step may raise, and whether retrying could ever help."""


class StepError(Exception):
    """A step failed. Retryable by default: the cause may be transient (load, disk)."""

    retryable = True


class RejectedInput(StepError):
    """The input is not acceptable evidence media; retrying cannot change that."""

    retryable = False


class MediaToolError(StepError):
    """ffmpeg or ffprobe could not be run, or ran too long."""


class MediaRefused(MediaToolError):
    """The tool ran and refused the input (non-zero exit): the input, not the tool, is at fault."""


class OverMemoryCeiling(MediaToolError):
    """A media tool needed more memory than its ceiling; the same ceiling gives the same result."""

    retryable = False


class NoSpace(StepError):
    """A media tool could not write: the disk is full. An outage, retried once space is freed."""


class ServiceDown(StepError):
    """A service the step must use did not answer (a time-stamp authority): an outage, not a bad file. The
    job goes back to the queue without counting the attempt, and the worker pauses, as on a full disk."""


class MaskingLeak(StepError):
    """The masked video still shows a face (the leak check found it): the same settings give the same video."""

    retryable = False
