"""Child processes that cannot outlive, outgrow or outlast the worker.

Every media tool runs with a memory ceiling (``RLIMIT_AS``), and dies with the
process that started it (``PR_SET_PDEATHSIG``): a worker killed with -9 must
not leave an ffmpeg behind that holds the unredacted work copy open and whose
timeout nobody enforces any more. The caller gives the timeout and the thread
count (ffmpeg takes that as an argument).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_bytes: int


def _confine(parent: int, memory_bytes: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: nothing here may take a lock."""

    def confine() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(126)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core dump would hold decoded frames

    return confine


def run(args: Sequence[str], limits: Limits, *, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """Run ``args`` to completion under ``limits``; TimeoutExpired and OSError propagate.

    The child gets a session of its own, so a Ctrl-C on the worker's terminal
    reaches the worker (which decides whether to finish or give the job back)
    and not the tool half-way through a step.
    """
    return subprocess.run(
        list(args), stdin=stdin, capture_output=True, timeout=limits.timeout_s, check=False,
        start_new_session=True, preexec_fn=_confine(os.getpid(), limits.memory_bytes),
    )



def start(args: Sequence[str], limits: Limits, *, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """Start ``args`` under the same confinement as ``run``, for a tool that streams through pipes.

    The caller owns the timeout: a streaming tool's run time grows with the
    recording, so the caller watches that it keeps making progress (see
    ``Watchdog``) instead of capping the whole run.
    """
    return subprocess.Popen(
        list(args), stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
        preexec_fn=_confine(os.getpid(), limits.memory_bytes),
    )


class Watchdog:
    """Kills a streaming child that makes no progress for ``stall_s`` seconds.

    ``alive()`` is called on each unit of progress (a frame); a hung decoder
    or encoder is killed, which ends the pipe and fails the step instead of
    holding the job for ever.
    """

    def __init__(self, process: subprocess.Popen, stall_s: float):
        self.process = process
        self.stall_s = stall_s
        self.stalled = False
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def alive(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.stall_s / 4)):
            if time.monotonic() - self._last > self.stall_s and self.process.poll() is None:
                self.stalled = True
                self.process.kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
