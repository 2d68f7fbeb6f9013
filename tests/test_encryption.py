"""Envelope encryption of stored objects: round trips, and every way ciphertext can be tampered with."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import time

import pytest
from support import REPO, Cli, aws_client, ffmpeg

from worker.encryption import envelope, keys
from worker.encryption.envelope import DecryptionError, WrongKey

CHUNK = 1024
TAGGED = CHUNK + 16


CONTEXT = b"test object"


def _seal(data: bytes, key, context: bytes = CONTEXT) -> bytes:
    out = io.BytesIO()
    assert envelope.seal(io.BytesIO(data), out, key, context, chunk_bytes=CHUNK) == len(data)
    return out.getvalue()


def _open(sealed: bytes, key, context: bytes = CONTEXT) -> bytes:
    out = io.BytesIO()
    envelope.unseal(io.BytesIO(sealed), out, key, context)
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 5, CHUNK - 4, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
@pytest.mark.parametrize("padded", [False, True])
def test_round_trip_at_every_chunk_boundary(size, padded):
    key = keys.master(os.urandom(32))
    data = os.urandom(size)
    out = io.BytesIO()
    with envelope.SealingWriter(out, key, CONTEXT, CHUNK, padded=padded) as writer:
        for start in range(0, size, 333):
            writer.write(data[start:start + 333])
    sealed = out.getvalue()
    assert len(sealed) == envelope.sealed_size(size, CHUNK, padded=padded)
    assert _open(sealed, key) == data
    assert size < 64 or data[:64] not in sealed
    if padded and size:   # padding chunks are authenticated like the others: cutting them off is detected
        with pytest.raises(DecryptionError):
            _open(sealed[:-TAGGED], key)


def test_padding_hides_which_of_many_videos_is_stored():
    sizes = range(305 * 2**20, 318 * 2**20, 2**20 // 3)   # 39 videos of 305 to 318 MiB
    assert len({envelope.sealed_size(size, padded=True) for size in sizes}) == 1
    assert all(envelope.sealed_size(size, padded=True) < 1.13 * size for size in (50 * 2**20, 3 * 2**30))


def test_every_tampering_is_detected():
    key = keys.master(os.urandom(32))
    data = os.urandom(4 * CHUNK + 100)
    sealed = _seal(data, key)
    head, body = sealed[:envelope.HEADER_BYTES], sealed[envelope.HEADER_BYTES:]
    chunks = [body[i:i + TAGGED] for i in range(0, len(body), TAGGED)]
    flipped = bytearray(sealed)
    flipped[envelope.HEADER_BYTES + 2 * TAGGED + 7] ^= 1
    other = _seal(os.urandom(4 * CHUNK + 100), key)
    other_chunk = other[envelope.HEADER_BYTES + TAGGED:envelope.HEADER_BYTES + 2 * TAGGED]
    broken = {
        "a flipped byte": bytes(flipped),
        "cut at a chunk boundary": head + b"".join(chunks[:3]),
        "cut inside a chunk": sealed[:-50],
        "chunks swapped": head + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "a chunk repeated": head + chunks[0] + chunks[0] + b"".join(chunks[1:]),
        "a chunk from another object": head + chunks[0] + other_chunk + b"".join(chunks[2:]),
        "an altered header": head[:6] + bytes([head[6] ^ 1]) + head[7:] + body,
        "not encrypted at all": data,
        "another object's wrapped key": head[:-60] + other[envelope.HEADER_BYTES - 60:envelope.HEADER_BYTES] + body,
    }
    for what, ciphertext in broken.items():
        with pytest.raises(DecryptionError):
            _open(ciphertext, key)
            pytest.fail(f"{what} was not detected")
    with pytest.raises(DecryptionError):   # a sealed object put in another's place does not open there
        _open(sealed, key, b"another object")
    with pytest.raises(ValueError):
        envelope.seal(io.BytesIO(data), io.BytesIO(), key, CONTEXT, chunk_bytes=0)

def test_a_wrong_key_is_told_apart_from_damage_and_rotation_rewraps_only_the_header():
    old, new = keys.master(os.urandom(32)), keys.master(os.urandom(32))
    data = os.urandom(5 * CHUNK)
    sealed = _seal(data, old)
    with pytest.raises(WrongKey):
        _open(sealed, new)
    header = envelope.rewrap(sealed[:envelope.HEADER_BYTES], old, new, CONTEXT)
    rotated = header + sealed[envelope.HEADER_BYTES:]
    assert len(header) == envelope.HEADER_BYTES and rotated[envelope.HEADER_BYTES:] == sealed[envelope.HEADER_BYTES:]
    assert _open(rotated, new) == data
    with pytest.raises(WrongKey):
        _open(rotated, old)


def test_key_files_and_passphrases(tmp_path):
    path = keys.new_key_file(tmp_path / "storage.key")
    assert path.stat().st_mode & 0o077 == 0 and keys.from_key_file(path) == keys.from_key_file(path)
    with pytest.raises(FileExistsError):
        keys.new_key_file(path)
    with pytest.raises(keys.MasterKeyError, match="removable medium"):
        keys.from_key_file(tmp_path / "missing.key")
    salt = tmp_path / "passphrase.json"
    first = keys.from_passphrase("correct horse battery staple", salt)
    assert salt.stat().st_mode & 0o077 == 0
    assert keys.from_passphrase("correct horse battery staple", salt) == first
    with pytest.raises(keys.MasterKeyError, match="wrong"):
        keys.from_passphrase("wrong horse", salt)
    salt.write_text("{not json")
    with pytest.raises(keys.MasterKeyError, match="damaged"):
        keys.from_passphrase("correct horse battery staple", salt)


def test_storage_names_do_not_reveal_which_video_is_held():
    evidence_id = "ab" * 32
    one, two = os.urandom(32), os.urandom(32)
    name = keys.storage_name(one, evidence_id)
    assert name == keys.storage_name(one, evidence_id) and name != keys.storage_name(two, evidence_id)
    assert evidence_id not in name and len(name) == 64


def test_a_master_key_held_by_kms_opens_only_through_kms(aws_endpoint, tmp_path):
    kms = aws_client("kms", aws_endpoint)
    key_id = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    other = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    path = keys.new_kms_key(tmp_path / "storage.kms", kms, key_id)
    opened = keys.from_kms(path, kms, key_id)
    assert opened == keys.from_kms(path, kms, key_id) and opened.key not in path.read_bytes()
    data = os.urandom(3 * CHUNK)
    assert _open(_seal(data, opened), keys.from_kms(path, kms, key_id)) == data
    with pytest.raises(keys.MasterKeyError, match="would not decrypt"):
        keys.from_kms(path, kms, other)


def test_the_staff_roster_is_sealed_and_a_wrong_or_missing_key_is_refused(cli, tmp_path):
    import numpy as np

    from worker.processing.staff import Roster, RosterError

    key_file = tmp_path / "storage.key"
    printed = cli("keys", "init-storage-key", "--out", key_file).stdout
    assert "[encryption]" in printed and str(key_file) in printed and key_file.stat().st_mode & 0o077 == 0
    roster = Roster(cli.home, keys.from_key_file(key_file))
    face = np.linspace(-0.25, 0.25, 128)
    roster.enroll("Zaira-NAME-MARKER", [face])
    raw = (cli.home / "staff" / "roster.json").read_bytes()
    assert b"Zaira" not in raw and b"0.25" not in raw and b"staff-roster" not in raw
    with pytest.raises(RosterError, match="encrypted"):
        Roster(cli.home).names()

    env = {"EVIDENCE_ENCRYPTION__KEY_SOURCE": "file", "EVIDENCE_ENCRYPTION__KEY_FILE": str(key_file)}
    assert cli.json("staff", "list", **env)["staff"] == {"Zaira-NAME-MARKER": 1}
    missing = cli("staff", "list", check=False, **{**env, "EVIDENCE_ENCRYPTION__KEY_FILE": str(tmp_path / "gone")})
    assert missing.returncode == 2 and "removable medium" in missing.stderr and "Traceback" not in missing.stderr
    other = keys.new_key_file(tmp_path / "other.key")
    wrong = cli("staff", "list", check=False, **{**env, "EVIDENCE_ENCRYPTION__KEY_FILE": str(other)})
    assert wrong.returncode == 1 and "another master key" in wrong.stderr and "Traceback" not in wrong.stderr
    refused = cli("worker", "--once", check=False, **{**env, "EVIDENCE_ENCRYPTION__KEY_FILE": str(tmp_path / "no")})
    assert refused.returncode == 2 and "removable medium" in refused.stderr

    # A plain roster where a sealed one should be (an intruder's empty one) is refused; sealing is explicit.
    roster_file = cli.home / "staff" / "roster.json"
    roster_file.write_text(json.dumps({"schema": "evidence-worker/staff-roster/1", "staff": {}}))
    planted = cli("staff", "list", check=False, **env)
    assert planted.returncode == 1 and "not encrypted" in planted.stderr
    assert cli.json("staff", "seal", **env)["people"] == 0 and roster_file.read_bytes().startswith(envelope.MAGIC)


def test_a_service_gets_its_passphrase_from_the_environment_or_a_descriptor(cli: Cli, tmp_path):
    """Passphrase mode runs without a terminal: EVIDENCE_PASSPHRASE, or EVIDENCE_PASSPHRASE_FD (never argv)."""
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip))
    mode = {"EVIDENCE_ENCRYPTION__KEY_SOURCE": "passphrase"}
    evidence_id = cli.json("ingest", clip, **mode, EVIDENCE_PASSPHRASE="correct horse")["ingested"][0]["evidence_id"]

    def through_a_descriptor(phrase: str) -> subprocess.CompletedProcess:
        read, write = os.pipe()
        os.write(write, f"{phrase}\n".encode())
        os.close(write)
        try:
            return subprocess.run(cli.command("show", evidence_id, "--json"), cwd=REPO, capture_output=True,
                                  text=True, timeout=60, pass_fds=(read,), stdin=subprocess.DEVNULL,
                                  env={**cli.env, **mode, "EVIDENCE_PASSPHRASE_FD": str(read)})
        finally:
            os.close(read)

    shown = through_a_descriptor("correct horse")
    assert shown.returncode == 0 and json.loads(shown.stdout)["evidence_id"] == evidence_id
    wrong = through_a_descriptor("wrong horse")
    assert wrong.returncode == 2 and "passphrase" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_person_types_the_passphrase_once_per_command(cli: Cli, tmp_path):
    """The command's root loads the master key once and hands it down: the worker, which opens the store, the
    queue and the staff roster, asks a person at a terminal once, and runs the intake under that key."""
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip))
    mode = {"EVIDENCE_ENCRYPTION__KEY_SOURCE": "passphrase"}
    evidence_id = cli.json("ingest", clip, **mode, EVIDENCE_PASSPHRASE="correct horse")["ingested"][0]["evidence_id"]
    controller, terminal = os.openpty()
    # No controlling terminal: getpass then prompts on stderr and reads the terminal on stdin, echo off.
    worker = subprocess.Popen(cli.command("worker", "--once"), cwd=REPO, env={**cli.env, **mode}, stdin=terminal,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    os.close(terminal)
    seen, answered, deadline = b"", 0, time.monotonic() + 240
    try:
        while worker.poll() is None and time.monotonic() < deadline:
            if select.select([worker.stderr], [], [], 0.2)[0]:
                seen += os.read(worker.stderr.fileno(), 65536)
            while seen.count(b"passphrase: ") > answered:   # answered only once asked: getpass flushes input
                answered += 1
                os.write(controller, b"correct horse\n")
        seen += worker.stderr.read()
        assert worker.wait(timeout=30) == 0, seen.decode(errors="replace")[-2000:]
    finally:
        worker.kill()
        os.close(controller)
    assert seen.count(b"evidence storage passphrase: ") == 1, seen.decode(errors="replace")[-2000:]
    runs = cli.json("show", evidence_id, "--json", **mode, EVIDENCE_PASSPHRASE="correct horse")["runs"]
    assert [run["status"] for run in runs] == ["committed"]
