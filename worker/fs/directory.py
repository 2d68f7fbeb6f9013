"""Directories held open, through which no link is ever followed.

Every name is resolved relative to an open directory descriptor with
``O_NOFOLLOW``: a symbolic link planted where this software expects one of
its folders or files (``INBOX/.ingested``, an item folder, a lock file) is
refused with LinkRefused instead of being followed somewhere else. What is
created is owner-only whatever the umask: folders 0700, files 0600, made
read-only (0500/0400) where they are write-once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.errors import EvidenceError

PRIVATE_DIR, SEALED_DIR = 0o700, 0o500
PRIVATE_FILE, SEALED_FILE = 0o600, 0o400

# Something this young may belong to an owner that has not taken its lock yet (see Directory.held).
OWNER_GRACE_S = 60

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkRefused(EvidenceError):
    """A symbolic link (or something else) stands where this software keeps a folder or file of its own."""


def _refuse(path: Path, what: str) -> LinkRefused:
    return LinkRefused(f"{path} is {what}; it is never followed or used. Remove it, or move it aside, and try again")


def _open_dir_at(parent: int | None, name: str | Path, shown: Path) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symbolic link" if _is_link(parent, name) else "not a folder"
            raise _refuse(shown, kind) from None
        raise


def _is_link(parent: int | None, name: str | Path) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


class Directory:
    """One open folder. Close it (or use ``with``) when done."""

    def __init__(self, fd: int, path: Path):
        self.fd = fd
        self.path = Path(path)

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, create: bool = False, mode: int = PRIVATE_DIR) -> Directory:
        """Open ``path``, creating it (and missing parents) with ``mode`` when asked.

        The last component must be a real folder, not a link; the folders
        above it are the operator's choice and are taken as they are.
        """
        path = Path(os.path.abspath(path))
        if create:
            if not path.parent.exists():
                cls.open(path.parent, create=True, mode=mode).close()
            with cls.open(path.parent) as parent:
                return parent.child(path.name, create=True, mode=mode)
        return cls(_open_dir_at(None, path, path), path)

    def child(self, name: str, *, create: bool = False, mode: int = PRIVATE_DIR) -> Directory:
        """The folder ``name`` inside this one; made with ``mode`` when missing and ``create`` is set."""
        if create:
            try:
                os.mkdir(name, mode, dir_fd=self.fd)
            except FileExistsError:
                pass
            else:
                fd = _open_dir_at(self.fd, name, self.path / name)
                os.fchmod(fd, mode)  # mkdir's mode is filtered by the umask
                self.fsync()  # the new folder's name survives a power cut
                return Directory(fd, self.path / name)
        return Directory(_open_dir_at(self.fd, name, self.path / name), self.path / name)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- looking -------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name: str) -> bool:
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def is_dir(self, name: str) -> bool:
        try:
            return stat.S_ISDIR(self.lstat(name).st_mode)
        except FileNotFoundError:
            return False

    # -- files ---------------------------------------------------------------

    def open_fd(self, name: str, flags: int, mode: int = PRIVATE_FILE) -> int:
        """``os.open`` of ``name`` here, never through a link; a file it creates gets ``mode`` exactly."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _refuse(self.path / name, "a symbolic link") from None
            raise
        if flags & os.O_CREAT:
            os.fchmod(fd, mode)
        return fd

    def open_file(self, name: str, mode: str = "rb"):
        """A Python file object for ``name``: "rb", "wb" (new file only) or "ab".

        Reading opens only a regular file: a FIFO planted where a record is
        kept would block its reader for good, a device would read forever.
        The open does not wait on either, and is refused after it.
        """
        if mode == "rb":
            fd = self.open_fd(name, os.O_RDONLY | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise _refuse(self.path / name, "not a regular file (a FIFO, a device or a socket)")
            os.set_blocking(fd, True)
            return os.fdopen(fd, mode, buffering=0)
        flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                 "a+b": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
        return os.fdopen(self.open_fd(name, flags), mode)

    def read_bytes(self, name: str) -> bytes:
        with self.open_file(name) as handle:
            return handle.read()

    def new_temp(self, prefix: str) -> tuple[int, str]:
        """A new, empty, owner-only file with an unguessable name: (descriptor open for writing, name)."""
        while True:
            name = f"{prefix}{secrets.token_hex(8)}"
            try:
                return self.open_fd(name, os.O_RDWR | os.O_CREAT | os.O_EXCL), name
            except FileExistsError:
                continue

    @contextmanager
    def _durable_temp(self, data: bytes, mode: int) -> Iterator[str]:
        """A new file here holding ``data``, fsynced, with ``mode``: its name, removed afterwards if still there."""
        fd, tmp = self.new_temp(".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), mode)
            yield tmp
        finally:
            self.unlink(tmp, missing_ok=True)

    def write_once(self, name: str, data: bytes, mode: int = SEALED_FILE) -> bool:
        """Write ``name`` durably unless it exists; False if it did."""
        with self._durable_temp(data, mode) as tmp:
            try:
                self.link(tmp, self, name)
            except FileExistsError:
                return False
            self.fsync()
            return True

    def replace(self, name: str, data: bytes, mode: int = PRIVATE_FILE) -> None:
        """Write ``name`` durably, replacing what is there in one step (a crash leaves the old or the new)."""
        with self._durable_temp(data, mode) as tmp:
            self.rename(tmp, self, name)
            self.fsync()

    def seal(self, name: str) -> None:
        """Make the file or folder ``name`` read-only for its owner (0400/0500)."""
        info = self.lstat(name)
        if stat.S_ISDIR(info.st_mode):
            with self.child(name) as folder:
                os.fchmod(folder.fd, SEALED_DIR)
        else:
            fd = self.open_fd(name, os.O_RDONLY)
            try:
                os.fchmod(fd, SEALED_FILE)
            finally:
                os.close(fd)

    # -- names ---------------------------------------------------------------

    def link(self, name: str, target: Directory, target_name: str) -> None:
        """Hard-link ``name`` as ``target_name`` in ``target``; FileExistsError rather than replace."""
        os.link(name, target_name, src_dir_fd=self.fd, dst_dir_fd=target.fd, follow_symlinks=False)

    def rename(self, name: str, target: Directory, target_name: str) -> None:
        os.rename(name, target_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    def unlink(self, name: str, *, missing_ok: bool = False) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self, name: str) -> None:
        """Remove the folder ``name`` and everything in it, never following a link out of it."""
        try:
            with self.child(name) as folder:
                os.fchmod(folder.fd, PRIVATE_DIR)  # a sealed folder's entries cannot be removed
            shutil.rmtree(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def fsync(self) -> None:
        """Make new names in this folder survive a power cut."""
        os.fsync(self.fd)

    @contextmanager
    def locked(self, name: str, *, wait: bool = True) -> Iterator[None]:
        """Hold an exclusive lock on the file ``name`` (created if missing) for the ``with`` block.

        BlockingIOError when ``wait`` is off and another process holds it.
        """
        fd = self.open_fd(name, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            yield
        finally:
            os.close(fd)

    def held(self, name: str) -> bool:
        """Whether a live process holds the lock on ``name``; FileNotFoundError if there is no such file."""
        fd = self.open_fd(name, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
