"""A seized machine, a stolen disk, a leaked bucket, a burned office: encryption at rest, replicas, restore."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from support import AWS_ENV, SAMPLE_VIDEO, Cli, aws_client, ffmpeg

from worker.backends.local import LocalStore
from worker.backends.local.rotation import rotate
from worker.encryption import envelope, keys
from worker.errors import ConfigError, IntegrityError
from worker.processing.replication import lag, replicate, restore
from worker.record import custody

MARKERS = ["TITLEMARKER7731", "COMMENTMARKER7731", "FILEMARKER7731", "CASEMARKER7731", "COLLECTORMARKER7731",
           "NOTEMARKER7731"]


def _config(path: Path, home: Path, key_file: Path, replicas: str) -> Path:
    path.write_text(f'home = "{home}"\n[encryption]\nkey_source = "file"\nkey_file = "{key_file}"\n{replicas}')
    return path


def _every_file(*roots: Path) -> dict[Path, bytes]:
    """Each file's path (names count too) and bytes."""
    return {path: str(path).encode() + b"\n" + path.read_bytes()
            for root in roots for path in root.rglob("*") if path.is_file()}


def _bucket_objects(s3, bucket: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            body = s3.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"].read()
            found[f"{version['Key']}@{version['VersionId']}"] = version["Key"].encode() + b"\n" + body
    return found


@pytest.mark.slow
def test_nothing_readable_on_a_seized_home_a_nas_or_a_bucket_and_a_restore_passes_audit(
        cli: Cli, tmp_path: Path, shared_data: Path, aws_endpoint: str, locked_bucket: str):
    video = tmp_path / "Interview-FILEMARKER7731.mp4"
    ffmpeg("-ss", "2", "-t", "4", "-i", str(SAMPLE_VIDEO), "-i", str(shared_data / "speech-ru" / "agent-user.flac"),
           "-map", "0:v", "-map", "1:a", "-vf", "scale=640:-2", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", "-shortest",
           "-metadata", "title=TITLEMARKER7731", "-metadata", "comment=COMMENTMARKER7731", str(video))
    key_file = tmp_path / "removable" / "storage.key"
    key_file.parent.mkdir()
    cli("keys", "init-storage-key", "--out", key_file)
    nas = tmp_path / "nas"
    replicas = (f'[[replicas]]\nname = "nas"\nbackend = "local"\nroot = "{nas}"\n'
                f'[[replicas]]\nname = "offsite"\nbackend = "s3"\nbucket = "{locked_bucket}"\n'
                f'endpoint_url = "{aws_endpoint}"\nprefix = "replica"\nretention_days = 1\n')
    config = _config(tmp_path / "evidence.toml", cli.home, key_file, replicas)
    cli.env.update({**AWS_ENV, "EVIDENCE_CONFIG": str(config)})

    [item] = cli.json("ingest", video, "--case", "CASEMARKER7731", "--collected-by", "COLLECTORMARKER7731",
                      "--note", "NOTEMARKER7731")["ingested"]
    evidence_id = item["evidence_id"]
    cli("worker", "--once", timeout=600)
    shown = cli.json("show", evidence_id)
    assert shown["original"]["case"] == "CASEMARKER7731" and shown["runs"][0]["status"] == "committed"
    assert cli.json("replicate", "--status")["ok"], "the worker's replication jobs left a replica behind"

    store = LocalStore(cli.home / "store", key=keys.from_key_file(key_file))
    [run] = store.run_records(evidence_id)
    segments = json.loads(store.read_output(evidence_id, run.record["run_id"], "transcript.json"))["segments"]
    transcript = " ".join(s["text"] for s in segments)   # what was said, not the notes around it
    words = [w for w in transcript.replace(".", " ").replace(",", " ").split() if len(w) >= 6]
    assert words, f"the speech was not transcribed: {transcript!r}"
    media = video.read_bytes()
    needles = [m.encode() for m in MARKERS] + [evidence_id.encode(), media[len(media) // 2:len(media) // 2 + 64]]
    needles += [w.encode() for w in words] + [run.record["run_id"].encode()]
    seized = _every_file(cli.home, nas) | _bucket_objects(aws_client("s3", aws_endpoint), locked_bucket)
    assert any(b"replica/" in body for body in seized.values()), "nothing reached the S3 replica"
    for where, data in seized.items():
        for needle in needles:
            assert needle not in data, f"{needle[:40]!r} is readable in {where}"
    assert not list((cli.home / "work").iterdir()), "a work folder outlived its run"
    # The trial CA's key travels with the replicas, sealed like everything else.
    signer_key = (cli.home / "signing" / "signer-key.pem").read_bytes().split(b"-----")[2].strip()[:48]
    for where, data in (_every_file(nas) | _bucket_objects(aws_client("s3", aws_endpoint), locked_bucket)).items():
        assert signer_key not in data, f"the trial CA's key is readable in {where}"

    other_key = keys.new_key_file(tmp_path / "removable" / "other.key")
    wrong = cli("show", evidence_id, check=False, EVIDENCE_ENCRYPTION__KEY_FILE=str(other_key))
    assert wrong.returncode == 2 and "another master key" in wrong.stderr and "Traceback" not in wrong.stderr

    # The office burns: a new machine, the key from escrow, each replica in turn.
    for source in ("nas", "offsite"):
        fresh = Cli(tmp_path / f"new-home-{source}")
        fresh.env.update({**AWS_ENV, "EVIDENCE_CONFIG": str(
            _config(tmp_path / f"new-{source}.toml", fresh.home, key_file, replicas))})
        assert fresh.json("restore", "--from", source)["restored"] == [evidence_id]
        audited = fresh("audit", check=False)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        again = fresh.json("show", evidence_id)
        assert again["original"]["case"] == "CASEMARKER7731" and again["custody"]["chain_ok"]
        assert [(r["run_id"], r["outputs"]) for r in again["runs"]] == \
            [(r["run_id"], r["outputs"]) for r in shown["runs"]]
        events = LocalStore(fresh.home / "store", key=keys.from_key_file(key_file)).custody(evidence_id).events
        assert [e["details"].get("replica") for e in events if e["event"] == custody.RESTORED] == [source]
        # The restored home signs as the old one did, and exports a clip that verifies.
        assert (fresh.home / "signing" / "ca.pem").read_bytes() == (cli.home / "signing" / "ca.pem").read_bytes()
        bundle = fresh.json("export", evidence_id, "--from", "00:00:00.5", "--to", "00:00:02", "--recipient", "Court",
                            "--out", tmp_path / f"bundle-{source}")
        assert bundle["verification"]["ok"], bundle["verification"]


def _sealed_item(tmp_path: Path, key) -> tuple[LocalStore, str, bytes]:
    store = LocalStore(tmp_path / "primary", key=key)
    data = os.urandom(3 * 2**20 + 5)
    stored = store.put_original(io.BytesIO(data), intake={"original_name": "v.mp4", "case": "C"}, actor="t")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "transcript.txt").write_text("слова свидетеля")
    store.append_custody(stored.evidence_id, custody.JOB_ENQUEUED, "t", {"job_id": "job-x", "run_id": "intake-x"})
    started = store.append_custody(stored.evidence_id, custody.RUN_STARTED, "t", {"run_id": "intake-x",
                                                                                  "job_id": "job-x"})
    committed = store.commit_run(stored.evidence_id, "intake-x", {"transcript.txt": out / "transcript.txt"},
                                 {"run_id": "intake-x", "custody_anchor": started["hash"]})
    store.append_custody(stored.evidence_id, custody.RUN_COMMITTED, "t", {
        "run_id": "intake-x", "job_id": "job-x", "outputs": committed.record["outputs"],
        "record_sha256": committed.sha256})
    return store, stored.evidence_id, data


def _item_folder(store: LocalStore, evidence_id: str) -> Path:
    return Path(store.location(evidence_id))


def test_tampered_truncated_or_swapped_ciphertext_is_refused_and_a_bad_replica_restores_nothing(tmp_path: Path):
    key = keys.master(os.urandom(32))
    primary, evidence_id, data = _sealed_item(tmp_path, key)
    nas = LocalStore(tmp_path / "nas", key=key)
    replicate(primary, nas, "nas", evidence_id, actor="t", work=tmp_path / "work")
    assert not lag(primary, nas, evidence_id).behind

    folder = _item_folder(nas, evidence_id)
    original = folder / "original" / "original.sealed"
    os.chmod(original.parent, 0o700)
    os.chmod(original, 0o600)
    sealed = bytearray(original.read_bytes())
    sealed[len(sealed) // 2] ^= 1
    original.write_bytes(bytes(sealed))
    with pytest.raises(IntegrityError, match="does not decrypt"):
        nas.verify_original(evidence_id)
    empty = LocalStore(tmp_path / "new", key=key)
    restored, failed = restore(nas, empty, "nas", actor="t", work=tmp_path / "work")
    assert restored == [] and "does not decrypt" in failed[evidence_id]
    assert not empty.has_original(evidence_id) and not empty.run_records(evidence_id)   # only its chain came

    run = Path(nas.location(evidence_id, "intake-x"))
    assert run.name != "intake-x", "a run id derives from the evidence id alone: it must not name a folder"
    os.chmod(run, 0o700)
    os.chmod(run / "transcript.txt", 0o600)
    (run / "transcript.txt").write_bytes((run / "transcript.txt").read_bytes()[:-3])
    with pytest.raises(IntegrityError):
        nas.read_output(evidence_id, "intake-x", "transcript.txt")
    other = primary.put_original(io.BytesIO(b"another video"), intake={"case": "D"}, actor="t")
    record = folder / "evidence.json"
    os.chmod(record, 0o600)
    record.write_bytes((_item_folder(primary, other.evidence_id) / "evidence.json").read_bytes())
    with pytest.raises(IntegrityError):   # a sealed record moved from another item does not open here
        nas.evidence(evidence_id)

    # The primary, untouched, still restores whole into the store a failed restore left empty.
    assert restore(primary, empty, "primary", actor="t", work=tmp_path / "work") == (
        sorted([evidence_id, other.evidence_id]), {})


def test_rotating_the_master_key_keeps_everything_readable_and_retires_the_old_key(tmp_path: Path):
    old, new = keys.master(os.urandom(32)), keys.master(os.urandom(32))
    store, evidence_id, data = _sealed_item(tmp_path, old)
    before = (_item_folder(store, evidence_id) / "original" / "original.sealed").read_bytes()
    with pytest.raises(ConfigError, match="in use by another process"):   # a worker holding the store
        rotate([store.root], old, new)
    store.close()
    # item id, record, original, custody log, output, run record, keyring
    assert rotate([store.root], old, new) == {store.root: 7}
    assert rotate([store.root], old, new) == {}, "a second run finds it done"
    rotated = LocalStore(store.root, key=new)
    after = (_item_folder(rotated, evidence_id) / "original" / "original.sealed").read_bytes()
    header = envelope.HEADER_BYTES
    assert after[header:] == before[header:] and after[:header] != before[:header], "content is not re-encrypted"
    rotated.verify_original(evidence_id)
    assert rotated.read_output(evidence_id, "intake-x", "transcript.txt") == "слова свидетеля".encode()
    assert rotated.custody(evidence_id).ok and rotated.evidence(evidence_id)["case"] == "C"
    with pytest.raises(ConfigError, match="another master key"):
        LocalStore(store.root, key=old)
    with pytest.raises(ConfigError, match="is encrypted"):
        LocalStore(store.root)


def test_a_replication_killed_mid_copy_resumes_without_duplicates(cli: Cli, tmp_path: Path):
    key_file = keys.new_key_file(tmp_path / "storage.key")
    nas = tmp_path / "nas"
    cli.env["EVIDENCE_CONFIG"] = str(_config(tmp_path / "evidence.toml", cli.home, key_file,
                                             f'[[replicas]]\nname = "nas"\nbackend = "local"\nroot = "{nas}"\n'))
    big = tmp_path / "long-recording.mp4"
    with open(big, "wb") as handle:
        for _ in range(48):
            handle.write(os.urandom(4 * 2**20))
    [item] = cli.json("ingest", big)["ingested"]
    evidence_id = item["evidence_id"]

    copying = cli.popen("replicate")
    incoming = nas / ".incoming"
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 2**20 for p in incoming.glob("upload-*")) if incoming.is_dir() else True:
        assert time.monotonic() < deadline and copying.poll() is None, "the copy finished before it was killed"
        time.sleep(0.01)
    copying.send_signal(signal.SIGKILL)
    copying.wait()
    middle = big.read_bytes()[100 * 2**20:100 * 2**20 + 64]
    for leftover in incoming.glob("upload-*"):
        assert middle not in leftover.read_bytes(), "a partial copy on the replica holds plaintext"

    status = cli.json("replicate", "--status", check=False)
    assert not status["ok"] and status["replicas"]["nas"]["behind"][0]["original"]
    assert cli.json("replicate")["ok"]
    assert cli.json("replicate", "--status")["ok"]
    replica = LocalStore(nas, key=keys.from_key_file(key_file))
    assert replica.evidence_ids() == [evidence_id]
    replica.verify_original(evidence_id)
    store = LocalStore(cli.home / "store", key=keys.from_key_file(key_file))
    replicated = [e for e in store.custody(evidence_id).events if e["event"] == custody.REPLICATED]
    assert len(replicated) == 1 and replicated[0]["details"]["original"]
    assert [e["hash"] for e in replica.custody(evidence_id).events] == \
        [e["hash"] for e in store.custody(evidence_id).events]


def test_a_restore_stopped_half_way_is_finished_by_the_next_and_never_invents_an_intake(tmp_path: Path):
    from worker.operations.audit import audit_store

    key = keys.master(os.urandom(32))
    primary, evidence_id, _ = _sealed_item(tmp_path, key)
    other = primary.put_original(io.BytesIO(b"a second video"), intake={"case": "D"}, actor="t").evidence_id
    nas = LocalStore(tmp_path / "nas", key=key)
    for item in (evidence_id, other):
        replicate(primary, nas, "nas", item, actor="t", work=tmp_path / "work")
    fresh = LocalStore(tmp_path / "new", key=key)
    # A restore killed after the first item's custody chain arrived, before its original did.
    fresh.adopt_custody(evidence_id, nas.custody(evidence_id).events)
    assert fresh.recover("worker") == [], "a worker start must not log an intake for a copy under way"
    restored, failed = restore(nas, fresh, "nas", actor="t", work=tmp_path / "work")
    assert sorted(restored) == sorted([evidence_id, other]) and failed == {}
    assert all(item.ok for item in audit_store(fresh, None, "t"))
    primary.append_custody(other, custody.AUDIT_RESULT, "t", {"ok": True})
    with pytest.raises(IntegrityError, match="history of its own"):   # a store in use is never a target
        restore(nas, primary, "nas", actor="t", work=tmp_path / "work")
