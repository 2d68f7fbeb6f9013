"""The EvidenceStore contract: every store adapter passes the same tests (LocalStore on disk, S3Store over
real HTTP to an S3-speaking server on loopback)."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
from support import AWS_ENV, Cli, aws_client
from tsa import TimeStampAuthority

from worker.backends.local import LocalStore
from worker.backends.s3 import S3Store
from worker.encryption import keys
from worker.errors import ConfigError, CustodyError, IntegrityError, NotFound
from worker.processing.replication import copy_item, keep_signing, lag
from worker.record import custody, stamps
from worker.record.store import EvidenceStore

FOOTAGE = b"field footage " * 5000


@pytest.fixture(params=["local", "local-sealed", "s3", "s3-sealed"])
def any_store(request, tmp_path) -> EvidenceStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    if request.param == "local-sealed":
        return LocalStore(tmp_path / "store", key=keys.master(os.urandom(32)))
    endpoint = request.getfixturevalue("aws_endpoint")
    key = keys.master(os.urandom(32)) if request.param == "s3-sealed" else None
    return S3Store(aws_client("s3", endpoint), request.getfixturevalue("locked_bucket"), prefix="evidence",
                   retention_days=1, spool_dir=tmp_path, key=key)


def test_an_original_is_stored_once_logged_and_re_verified(any_store, tmp_path):
    first = any_store.put_original(io.BytesIO(FOOTAGE), intake={"original_name": "a.mp4", "case": "C-1"}, actor="t")
    again = any_store.put_original(io.BytesIO(FOOTAGE), intake={"original_name": "b.mp4"}, actor="t")
    assert first.evidence_id == hashlib.sha256(FOOTAGE).hexdigest() and not first.duplicate and again.duplicate
    assert any_store.evidence_ids() == [first.evidence_id]
    assert any_store.evidence(first.evidence_id)["case"] == "C-1"
    chain = any_store.custody(first.evidence_id)
    assert chain.ok and [e["event"] for e in chain.events] == [custody.INGESTED, custody.DUPLICATE_UPLOAD]
    work = tmp_path / "work"
    work.mkdir()
    assert any_store.original_for_run(first.evidence_id, work).read_bytes() == FOOTAGE
    any_store.verify_original(first.evidence_id)
    with pytest.raises(NotFound):
        any_store.evidence("0" * 64)


def test_custody_is_a_hash_chain_appended_in_order(any_store):
    stored = any_store.put_original(io.BytesIO(FOOTAGE), intake={}, actor="t")
    for number in range(5):
        any_store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "t", {"n": number})
    chain = any_store.custody(stored.evidence_id)
    assert chain.ok and chain.count == 6 and [e["seq"] for e in chain.events] == list(range(6))
    assert all(e["prev"] == p["hash"] for p, e in zip(chain.events, chain.events[1:], strict=False))


def test_a_run_is_committed_once_with_its_outputs_verified(any_store, tmp_path):
    stored = any_store.put_original(io.BytesIO(FOOTAGE), intake={}, actor="t")
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "probe.json").write_text('{"ok": true}')
    (out / "big.bin").write_bytes(b"x" * 300_000)
    files = {"probe.json": out / "probe.json", "big.bin": out / "big.bin"}
    assert not any_store.is_committed(stored.evidence_id, "intake-v1-abc")
    committed = any_store.commit_run(stored.evidence_id, "intake-v1-abc", files, {"run_id": "intake-v1-abc"})
    assert committed is not None and any_store.is_committed(stored.evidence_id, "intake-v1-abc")
    assert any_store.commit_run(stored.evidence_id, "intake-v1-abc", files, {"run_id": "intake-v1-abc"}) is None
    [record] = any_store.run_records(stored.evidence_id)
    assert record.sha256 == committed.sha256 and record.record["outputs"]["big.bin"]["size"] == 300_000
    assert any_store.read_output(stored.evidence_id, "intake-v1-abc", "probe.json") == b'{"ok": true}'
    sha = record.record["outputs"]["big.bin"]["sha256"]
    assert any_store.hash_output(stored.evidence_id, "intake-v1-abc", "big.bin") == (sha, 300_000)
    fetched = any_store.fetch_output(stored.evidence_id, "intake-v1-abc", "big.bin", tmp_path / "copy",
                                     expected_sha256=sha)
    assert fetched.read_bytes() == b"x" * 300_000
    with pytest.raises(IntegrityError):
        any_store.fetch_output(stored.evidence_id, "intake-v1-abc", "big.bin", tmp_path / "other",
                               expected_sha256="0" * 64)
    assert not (tmp_path / "other").exists()
    with pytest.raises(NotFound):
        any_store.read_output(stored.evidence_id, "intake-v1-abc", "missing.txt")
    with pytest.raises(ValueError):
        any_store.commit_run(stored.evidence_id, "intake-v1-def", {"run.json": out / "probe.json"}, {})


def test_a_locked_original_cannot_be_deleted_or_overwritten_in_s3(aws_endpoint, locked_bucket, tmp_path):
    client = aws_client("s3", aws_endpoint)
    store = S3Store(client, locked_bucket, retention_days=1, spool_dir=tmp_path)
    stored = store.put_original(io.BytesIO(FOOTAGE), intake={"original_name": "a.mp4"}, actor="t")
    key = f"{stored.evidence_id}/original/original.mp4"
    head = client.head_object(Bucket=locked_bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=locked_bucket, Key=key, VersionId=head["VersionId"])
    with pytest.raises(Exception, match="PreconditionFailed"):
        client.put_object(Bucket=locked_bucket, Key=key, Body=b"forged", IfNoneMatch="*")
    store.verify_original(stored.evidence_id)


def test_a_bucket_without_object_lock_is_refused_unless_allowed(aws_endpoint, tmp_path):
    client = aws_client("s3", aws_endpoint)
    client.create_bucket(Bucket="evidence-unlocked", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    with pytest.raises(ConfigError, match="no versioning and no Object Lock"):
        S3Store(client, "evidence-unlocked", spool_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot be used"):
        S3Store(client, "evidence-missing", spool_dir=tmp_path)
    assert S3Store(client, "evidence-unlocked", spool_dir=tmp_path, require_lock=False).exposure()


def test_the_whole_intake_runs_against_s3(aws_endpoint, locked_bucket, cli: Cli, tiny_video):
    env = {**AWS_ENV, "EVIDENCE_STORE__BACKEND": "s3", "EVIDENCE_STORE__BUCKET": locked_bucket,
           "EVIDENCE_STORE__ENDPOINT_URL": aws_endpoint, "EVIDENCE_STORE__REGION": "eu-central-1",
           "EVIDENCE_STORE__PREFIX": "team-a"}
    evidence_id = json.loads(cli("ingest", tiny_video, "--json", **env).stdout)["ingested"][0]["evidence_id"]
    cli("worker", "--once", timeout=300, **env)
    shown = json.loads(cli("show", evidence_id, "--json", **env).stdout)
    [run] = shown["runs"]
    assert run["status"] == "committed" and "redacted.mp4" in run["outputs"]
    assert run["location"].startswith(f"s3://{locked_bucket}/team-a/{evidence_id}/runs/")
    assert json.loads(cli("audit", "--json", **env).stdout)["ok"]
    out = cli.home.parent / "for-court"
    facts = json.loads(cli("export", evidence_id, "--from", "00:00:01", "--to", "00:00:02", "--recipient", "Court",
                           "--out", out, "--json", **env).stdout)
    assert facts["verification"]["ok"] and facts["original"]["sha256"] == evidence_id
    keys = [o["Key"] for o in aws_client("s3", aws_endpoint).list_objects_v2(Bucket=locked_bucket)["Contents"]]
    assert all(key.startswith(f"team-a/{evidence_id}/") for key in keys if key != "team-a/.write-once-probe")
    assert not (cli.home / "store").exists()


def test_an_s3_intake_cut_off_after_its_original_is_completed_by_the_next_upload(aws_endpoint, locked_bucket,
                                                                                 tmp_path):
    client = aws_client("s3", aws_endpoint)
    store = S3Store(client, locked_bucket, retention_days=1, spool_dir=tmp_path)
    evidence_id = hashlib.sha256(FOOTAGE).hexdigest()
    client.put_object(Bucket=locked_bucket, Key=f"{evidence_id}/original/original.mov", Body=FOOTAGE)  # then died
    assert store.evidence_ids() == [evidence_id]
    with pytest.raises(NotFound):
        store.evidence(evidence_id)
    stored = store.put_original(io.BytesIO(FOOTAGE), intake={"original_name": "again.mp4"}, actor="t")
    assert not stored.duplicate and store.evidence(evidence_id)["stored_as"] == "original/original.mov"
    store.verify_original(evidence_id)
    assert [e["event"] for e in store.custody(evidence_id).events] == [custody.INGESTED]


def test_objects_are_encrypted_server_side_under_the_configured_kms_key(aws_endpoint, locked_bucket, tmp_path):
    kms = aws_client("kms", aws_endpoint)
    key_id = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    client = aws_client("s3", aws_endpoint)
    store = S3Store(client, locked_bucket, retention_days=1, spool_dir=tmp_path, sse_kms_key_id=key_id)
    stored = store.put_original(io.BytesIO(FOOTAGE), intake={"original_name": "a.mp4"}, actor="t")
    for key in (f"{stored.evidence_id}/original/original.mp4", f"{stored.evidence_id}/evidence.json",
                f"{stored.evidence_id}/custody/000000000000.json"):
        head = client.head_object(Bucket=locked_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and key_id in head["SSEKMSKeyId"]
    store.verify_original(stored.evidence_id)


def _store_marked_item(store: EvidenceStore, tmp_path, marker: str) -> str:
    """An item whose original, intake facts, custody and run output each carry ``marker``; its evidence id."""
    original = f"footage {marker}-original ".encode() * 5000
    stored = store.put_original(io.BytesIO(original), intake={"case": f"{marker}-case",
                                                              "original_name": f"{marker}-name.mp4"}, actor="t")
    store.append_custody(stored.evidence_id, custody.AUDIT_RESULT, "t", {"note": f"{marker}-custody"})
    output = tmp_path / "transcript.txt"
    output.write_text(f"{marker}-output")
    assert store.commit_run(stored.evidence_id, "intake-v1-abc", {"transcript.txt": output},
                            {"run_id": "intake-v1-abc", "note": f"{marker}-run"}) is not None
    return stored.evidence_id


def test_a_sealed_s3_store_shows_the_provider_nothing_and_refuses_another_key(aws_endpoint, locked_bucket, tmp_path):
    client = aws_client("s3", aws_endpoint)
    key = keys.master(os.urandom(32))
    store = S3Store(client, locked_bucket, prefix="team-a", retention_days=1, spool_dir=tmp_path, key=key)
    marker = f"marker-{os.urandom(8).hex()}"
    evidence_id = _store_marked_item(store, tmp_path, marker)
    versions = client.list_object_versions(Bucket=locked_bucket)["Versions"]
    # The write-once probe, the keyring, item.id, the original, evidence.json, two events, the output, run.json.
    assert len(versions) == 9
    for version in versions:
        body = client.get_object(Bucket=locked_bucket, Key=version["Key"], VersionId=version["VersionId"])["Body"]
        data = body.read()
        for secret in (marker, evidence_id, "intake-v1-abc"):
            assert secret not in version["Key"] and secret.encode() not in data, version["Key"]
    assert store.evidence(evidence_id)["stored_as"] == "original/original.sealed"
    again = S3Store(client, locked_bucket, prefix="team-a", retention_days=1, spool_dir=tmp_path, key=key)
    assert again.evidence_ids() == [evidence_id] and again.custody(evidence_id).ok and not again.exposure()
    assert again.read_output(evidence_id, "intake-v1-abc", "transcript.txt") == f"{marker}-output".encode()
    work = tmp_path / "work"
    work.mkdir()
    assert again.original_for_run(evidence_id, work).name == "original.mp4"
    with pytest.raises(ConfigError, match="another master key"):
        S3Store(client, locked_bucket, prefix="team-a", spool_dir=tmp_path, key=keys.master(os.urandom(32)))
    with pytest.raises(ConfigError, match="is encrypted"):
        S3Store(client, locked_bucket, prefix="team-a", spool_dir=tmp_path)
    store._claim("0" * 64)   # an intake that stopped right after claiming its prefix: nothing of it is stored
    assert store.evidence_ids() == [evidence_id] and not store.exposure()


def test_a_changed_or_moved_sealed_s3_object_is_detected(aws_endpoint, tmp_path):
    # Object Lock forbids overwriting, so the tampering happens in a bucket without it.
    client = aws_client("s3", aws_endpoint)
    bucket = f"evidence-plain-{os.urandom(6).hex()}"
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    store = S3Store(client, bucket, spool_dir=tmp_path, require_lock=False, key=keys.master(os.urandom(32)))
    evidence_id = _store_marked_item(store, tmp_path, "tamper")
    item = store.sealing.item_name(evidence_id)

    def flip(key: str) -> None:
        data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        data[-1] ^= 1
        client.put_object(Bucket=bucket, Key=key, Body=bytes(data))

    flip(f"{item}/original/original.sealed")
    with pytest.raises(IntegrityError, match="does not decrypt"):
        store.verify_original(evidence_id)
    with pytest.raises(IntegrityError):
        store.fetch_original(evidence_id, tmp_path / "copy.mp4")
    assert not (tmp_path / "copy.mp4").exists()
    run = f"{item}/runs/{store.sealing.run_name(evidence_id, 'intake-v1-abc')}"
    [output] = [key for key in store._keys(f"{run}/") if key.endswith("/transcript.txt")]
    flip(output)
    with pytest.raises(IntegrityError):
        store.read_output(evidence_id, "intake-v1-abc", "transcript.txt")
    with pytest.raises(IntegrityError):
        store.hash_output(evidence_id, "intake-v1-abc", "transcript.txt")
    # Two events swapped: each is bound to its sequence number, so neither opens in the other's place.
    first, second = (client.get_object(Bucket=bucket, Key=f"{item}/custody/{n:012d}.json")["Body"].read()
                     for n in (0, 1))
    client.put_object(Bucket=bucket, Key=f"{item}/custody/{0:012d}.json", Body=second)
    client.put_object(Bucket=bucket, Key=f"{item}/custody/{1:012d}.json", Body=first)
    chain = store.custody(evidence_id)
    assert not chain.ok and sum("does not decrypt" in problem for problem in chain.problems) == 2
    with pytest.raises(CustodyError):
        store.append_custody(evidence_id, custody.AUDIT_RESULT, "t", {})
    flip(f"{item}/evidence.json")
    with pytest.raises(IntegrityError):
        store.evidence(evidence_id)
    client.put_object(Bucket=bucket, Key=f"{item}/item.id", Body=b"planted")
    assert store.evidence_ids() == [] and any("sealed id" in problem for problem in store.exposure())
    client.delete_object(Bucket=bucket, Key="keyring.sealed")
    for key in (store.sealing.key, None):   # neither a new keyring nor plain writes among sealed items
        with pytest.raises(ConfigError, match="keyring"):
            S3Store(client, bucket, spool_dir=tmp_path, require_lock=False, key=key)


def test_an_item_is_copied_to_a_sealed_s3_replica_as_it_is_and_restored_from_it(aws_endpoint, locked_bucket,
                                                                                 tmp_path):
    key = keys.master(os.urandom(32))
    primary = LocalStore(tmp_path / "primary", key=key)
    replica = S3Store(aws_client("s3", aws_endpoint), locked_bucket, prefix="replica", retention_days=1,
                      spool_dir=tmp_path, key=key)
    evidence_id = _store_marked_item(primary, tmp_path, "copy")
    work = tmp_path / "work"
    work.mkdir()
    copied = copy_item(primary, replica, evidence_id, work)
    assert copied.original and copied.runs == ["intake-v1-abc"] and len(copied.events) == 2
    assert not lag(primary, replica, evidence_id).behind and not copy_item(primary, replica, evidence_id, work).runs
    assert replica.run_records(evidence_id) == primary.run_records(evidence_id)   # run.json byte for byte
    replica.verify_original(evidence_id)
    restored = LocalStore(tmp_path / "restored", key=key)
    copy_item(replica, restored, evidence_id, work)
    assert restored.custody(evidence_id).events == primary.custody(evidence_id).events
    assert restored.read_output(evidence_id, "intake-v1-abc", "transcript.txt") == b"copy-output"
    primary.append_custody(evidence_id, custody.AUDIT_RESULT, "t", {})
    restored.append_custody(evidence_id, custody.AUDIT_RESULT, "t", {})   # another history than the primary's
    assert replica.adopt_custody(evidence_id, primary.custody(evidence_id).events) == 1
    with pytest.raises(CustodyError, match="diverged"):
        replica.adopt_custody(evidence_id, restored.custody(evidence_id).events)


def test_a_run_copied_between_s3_stores_keeps_its_attempt(aws_endpoint, locked_bucket, tmp_path):
    key = keys.master(os.urandom(32))
    client = aws_client("s3", aws_endpoint)
    source, target = (S3Store(client, locked_bucket, prefix=prefix, retention_days=1, spool_dir=tmp_path, key=key)
                      for prefix in ("first", "second"))
    evidence_id = _store_marked_item(source, tmp_path, "between")
    work = tmp_path / "work"
    work.mkdir()
    copy_item(source, target, evidence_id, work)
    [run] = target.run_records(evidence_id)
    assert [run] == source.run_records(evidence_id) and run.record["attempt"].startswith("attempt-")
    assert target.read_output(evidence_id, "intake-v1-abc", "transcript.txt") == b"between-output"


def test_time_stamped_heads_are_kept_beside_the_chain_and_show_it_cut_back_or_written_again(any_store, tsa,
                                                                                           tmp_path):
    """Stamps from a real RFC 3161 authority (OpenSSL's, on loopback): kept once per event, sealed like the
    log, copied with it; a log that no longer holds a stamped head, or holds it with another hash, is said."""
    evidence_id = any_store.put_original(io.BytesIO(FOOTAGE), intake={}, actor="t").evidence_id
    for number in range(3):
        any_store.append_custody(evidence_id, custody.AUDIT_RESULT, "t", {"n": number})
    first = stamps.stamp_custody(any_store, evidence_id, tsa.url)
    assert first["seq"] == 3 and not any_store.add_custody_stamp(evidence_id, {**first, "time": "forged"})
    kept, chain = any_store.custody_stamps(evidence_id), any_store.custody(evidence_id)
    roots = stamps.roots_from(tsa.root.read_text())
    assert kept == [first] and stamps.problems(kept, chain, evidence_id, roots) == []

    cut = custody.verify_chain(b"".join(custody.encode(e) for e in chain.events[:3]), evidence_id)
    assert cut.ok and "cut back" in " ".join(stamps.problems(kept, cut, evidence_id, roots))
    again, previous = [], None   # the same events, made anew: a chain that checks, with other hashes
    for event in chain.events:
        previous = custody.new_event(previous, event=event["event"], evidence_id=evidence_id, actor="t",
                                     details=event["details"])
        again.append(previous)
    rewritten = custody.verify_chain(b"".join(custody.encode(e) for e in again), evidence_id)
    assert rewritten.ok and "written again" in " ".join(stamps.problems(kept, rewritten, evidence_id, roots))
    stranger = stamps.roots_from(TimeStampAuthority(tmp_path / "other", "another TSA").root.read_text())
    assert "does not verify" in " ".join(stamps.problems(kept, chain, evidence_id, stranger))
    forged = [{**first, "seq": 2, "hash": chain.events[2]["hash"]}]   # a real token moved to another event
    assert "does not verify" in " ".join(stamps.problems(forged, chain, evidence_id, roots))

    work = tmp_path / "work"
    work.mkdir()
    replica = LocalStore(tmp_path / "replica")
    assert lag(any_store, replica, evidence_id).stamps == 1
    assert copy_item(any_store, replica, evidence_id, work).stamps == 1
    assert replica.custody_stamps(evidence_id) == [first] and not lag(any_store, replica, evidence_id).behind


def test_the_signing_set_is_kept_once_by_name_and_read_back(any_store):
    key = b"-----BEGIN PRIVATE KEY-----\nTRIALKEYMARKER\n-----END PRIVATE KEY-----\n"
    files = {"trial-key-0123456789abcdef.pem": key, "anchors-fedcba9876543210.pem": b"anchor"}
    assert keep_signing(any_store, files) == 2 and keep_signing(any_store, files) == 0
    assert not any_store.keep_signing_file("anchors-fedcba9876543210.pem", b"another anchor")   # write-once
    assert any_store.signing_files() == files
