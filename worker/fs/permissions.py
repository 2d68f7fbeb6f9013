"""Owner-only, whatever the umask: finding what another local account could read or redirect."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

_REPORTED = 50


def _findings(root: Path, recursive: bool) -> Iterator[str]:
    uid = os.geteuid()
    try:
        top = os.stat(root, follow_symlinks=False)
    except FileNotFoundError:
        return
    yield from _judge(root, top, uid)
    if not recursive or not stat.S_ISDIR(top.st_mode):
        return
    for folder, dirs, files, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield from _judge(Path(folder) / name, info, uid)


def _judge(path: Path, info: os.stat_result, uid: int) -> Iterator[str]:
    if stat.S_ISLNK(info.st_mode):
        yield f"{path} is a symbolic link, which this software never makes (someone planted it)"
        return
    if info.st_uid != uid:
        yield f"{path} belongs to another account (uid {info.st_uid})"
    if info.st_mode & 0o077:
        yield (f"{path} is open to other accounts (mode {stat.S_IMODE(info.st_mode):04o}); "
               f"owner-only is 0700 for folders, 0600 or 0400 for files: chmod go-rwx")


def exposed(*roots: Path, recursive: bool = True) -> list[str]:
    """Every entry under ``roots`` that is open to other accounts, foreign-owned or a link (the first 50)."""
    found: list[str] = []
    extra = 0
    for root in roots:
        for finding in _findings(Path(root), recursive):
            if len(found) < _REPORTED:
                found.append(finding)
            else:
                extra += 1
    if extra:
        found.append(f"... and {extra} more")
    return found
