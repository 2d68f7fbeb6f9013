"""Whether another process still holds a file open for writing (an upload that paused, not one that ended).

Two ways on Linux, the cheap one first: a read lease (``F_SETLEASE``) can be
taken only while no process has the file open for writing, and the kernel
knows that for every account; it needs this account to own the file (or
CAP_LEASE) and a file system that supports leases. Otherwise the open files
in ``/proc/*/fd`` are compared with this one, which sees only the processes
this account may inspect. When neither can tell, the answer is None and the
caller relies on the file staying unchanged (and re-checks after copying).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from pathlib import Path

_PROC = Path("/proc")


def _lease_says(fd: int) -> bool | None:
    try:
        # A lease break is signalled to its holder, SIGIO by default, which would end this process;
        # SIGWINCH is ignored unless handled. The lease is dropped at once anyway.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGWINCH)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return True
        return None  # not the owner, or the file system keeps no leases
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return False


def _writing(flags_line: str) -> bool:
    flags = int(flags_line.split()[1], 8)
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def _proc_says(fd: int) -> bool | None:
    mine = os.fstat(fd)
    target = (mine.st_dev, mine.st_ino)
    complete = True
    for process in _PROC.iterdir():
        if not process.name.isdigit():
            continue
        try:
            descriptors = list((process / "fd").iterdir())
        except OSError:
            complete = False  # another account's process, or gone
            continue
        for descriptor in descriptors:
            try:
                info = os.stat(descriptor)
                if (info.st_dev, info.st_ino) != target:
                    continue
                fdinfo = (process / "fdinfo" / descriptor.name).read_text()
            except OSError:
                continue
            flags = next((line for line in fdinfo.splitlines() if line.startswith("flags:")), None)
            if flags is not None and _writing(flags):
                return True
    return False if complete else None


def open_for_writing(fd: int) -> bool | None:
    """True when some process has the file behind ``fd`` (opened read-only) open for writing; None: unknown."""
    said = _lease_says(fd)
    return said if said is not None else _proc_says(fd)
