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

