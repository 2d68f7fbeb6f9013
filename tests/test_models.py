"""The model registry's start-up check: a full hash once per install, kept as a stamp with the files' stat,
trusted only while nothing about the files changed; 'models verify' and 'audit' always hash again."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import Cli

from models.registry import STAMP_SUFFIX, ModelDamaged, Registry

YUNET = Path(__file__).resolve().parents[1] / "models" / "bundled" / "yunet-2023mar" / "model.onnx"
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A model cache of this test's own holding a real copy of CenterFace."""
    installed = Registry()
    folder = tmp_path / "cache"
    shutil.copytree(installed.location(installed.spec("centerface")), folder / "centerface")
    for path in (folder / "centerface").iterdir():
        path.chmod(0o600)
    return folder


def _flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(before.st_size // 2)
        byte = handle.read(1)
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_stamp_is_kept_and_a_file_changed_in_place_is_hashed_again(cache: Path):
    Registry(cache).load("centerface")
    stamp = cache / f"centerface{STAMP_SUFFIX}"
    assert stat.S_IMODE(stamp.stat().st_mode) == 0o444   # read by every account sharing the cache, as the weights are
    # The stamp is what a later start reads: a stamp that says a file hashes otherwise makes the model damaged.
    good = json.loads(stamp.read_text())
    stamp.chmod(0o600)
    lying = {**good, "hashes": {name: "0" * 64 for name in good["hashes"]}}
    stamp.write_text(json.dumps(lying))
    with pytest.raises(ModelDamaged):
        Registry(cache).load("centerface")
    stamp.write_text(json.dumps(good))
    Registry(cache).load("centerface")

    # Same size, same modification time, other bytes: the change time gives it away, and the file is hashed.
    _flip_a_byte_keeping_size_and_mtime(cache / "centerface" / "model.onnx")
    with pytest.raises(ModelDamaged, match="does not match the SHA-256"):
        Registry(cache).load("centerface")


def test_verify_and_audit_hash_again_whatever_the_stamp_says(cache: Path, cli: Cli):
    Registry(cache).load("centerface")
    model = cache / "centerface" / "model.onnx"
    _flip_a_byte_keeping_size_and_mtime(model)
    # Someone who can write the cache can also write a stamp for the altered file: a start then trusts it,
    # which is why the full hash is the audit's and 'models verify''s to make.
    stamp = cache / f"centerface{STAMP_SUFFIX}"
    forged = json.loads(stamp.read_text())
    stamp.chmod(0o600)
    info = model.stat()
    forged["key"][1] = [[name, *([info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
                                 if name == "model.onnx" else rest)] for name, *rest in forged["key"][1]]
    stamp.write_text(json.dumps(forged))
    Registry(cache).load("centerface")   # trusted: the stat matches the forged stamp

    with pytest.raises(ModelDamaged):
        Registry(cache).load("centerface", rehash=True)
    rows = {row["name"]: row for row in json.loads(cli("models", "verify", "--json", check=False,
                                                       EVIDENCE_MODELS__DIR=str(cache)).stdout)["models"]}
    assert rows["centerface"]["state"] == "damaged"
    audit = cli("audit", "--json", check=False, EVIDENCE_MODELS__DIR=str(cache))
    assert audit.returncode == 1
    assert any("centerface" in line for line in json.loads(audit.stdout)["store"]["problems"])


def test_a_link_planted_as_the_stamp_is_neither_followed_nor_written_through(cache: Path, tmp_path: Path):
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    (cache / f"centerface{STAMP_SUFFIX}").symlink_to(target)
    Registry(cache).load("centerface")
    assert target.read_text() == "keep me"
    assert not (cache / f"centerface{STAMP_SUFFIX}").is_symlink()


def test_a_cache_made_by_one_account_is_readable_by_the_service_account(cli: Cli):
    """An image bakes its models in as root; the worker runs as another account and must read them (and
    only read them), whatever the umask the installing command ran under (its own is 077)."""
    base = Path(tempfile.mkdtemp(prefix="evidence-models-", dir="/tmp"))
    try:
        base.chmod(0o755)
        source, cache = base / "yunet", base / "opt" / "evidence-models"
        source.mkdir()
        (base / "opt").mkdir(mode=0o755)   # as in an image: the folder above is there, open to all
        shutil.copy(YUNET, source / "model.onnx")
        env = {"EVIDENCE_MODELS__DIR": str(cache)}
        cli.json("models", "install", "yunet-copy", "--from", source, "--kind", "face-detector", **env)
        assert stat.S_IMODE(cache.stat().st_mode) == 0o755
        files = [p for p in cache.rglob("*") if p.is_file()]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in files)
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            pytest.skip("the modes are right; reading them as a second account needs root and setpriv")
        model = next(p for p in files if p.name == "model.onnx")
        read = subprocess.run([*NOBODY, "sha256sum", str(model)], capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        write = subprocess.run([*NOBODY, "touch", str(model)], capture_output=True, text=True, timeout=60)
        assert write.returncode != 0, "the service account must not be able to change a baked-in model"
    finally:
        shutil.rmtree(base, ignore_errors=True)
