"""Signed derivatives and offline verification, with the real c2pa library on real intake runs."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import c2pa
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from support import AWS_ENV, SAMPLE_VIDEO, Cli, aws_client, ffmpeg

from pipelines.provenance import credentials, manifest
from pipelines.provenance.verify import verify


@pytest.fixture
def signed_run(sample_item: dict, cli: Cli) -> dict:
    return {**sample_item, "ca": cli.home / "signing" / "ca.pem"}


C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")   # the MP4 box type of a C2PA manifest store


def _mdat_middle(data: bytes) -> int:
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"mdat":
            return offset + size // 2
        offset += size
    raise AssertionError("no mdat")


def test_intake_signs_the_masked_video_and_verify_checks_it_offline(signed_run, cli, tmp_path):
    video, ca = signed_run["video"], signed_run["ca"]
    report = cli.json("verify", video, "--trust-anchors", ca, "--original", SAMPLE_VIDEO)
    assert report["ok"] and report["trust"] == "trusted"
    assert report["original_sha256"] == signed_run["id"]
    assert [a["action"] for a in report["actions"]] == ["c2pa.opened", "c2pa.edited", "c2pa.transcoded"]
    assert {c["name"] for c in report["checks"]} >= {"signature valid", "content unchanged since signing",
                                                      "signer trusted", "chain reaches the original",
                                                      "original matches"}
    # The custom assertion binds every other output of the run by its SHA-256.
    record = json.loads((video.parent / "run.json").read_text())
    outputs = report["evidence"]["outputs"]
    assert set(outputs) == set(record["outputs"]) - {"redacted.mp4"}
    assert all(outputs[name] == record["outputs"][name]["sha256"] for name in outputs)
    assert "TEST CA, not for production" in cli("verify", video, "--trust-anchors", ca).stdout

    other = credentials.make_test_ca(tmp_path / "other")
    untrusted = cli("verify", video, "--trust-anchors", other["ca"], "--json", check=False)
    assert untrusted.returncode == 1 and json.loads(untrusted.stdout)["trust"] == "untrusted"

    flipped = tmp_path / "flipped.mp4"
    data = bytearray(video.read_bytes())
    data[_mdat_middle(bytes(data))] ^= 1
    flipped.write_bytes(bytes(data))
    broken = cli("verify", flipped, "--trust-anchors", ca, "--json", check=False)
    failed = {c["name"] for c in json.loads(broken.stdout)["checks"] if not c["ok"]}
    assert broken.returncode == 1 and json.loads(broken.stdout)["trust"] == "invalid"
    assert "content unchanged since signing" in failed


def test_no_picture_of_the_original_is_anywhere_in_the_manifest_store(signed_run):
    video = signed_run["video"]
    assert b"c2pa.thumbnail" not in video.read_bytes()
    with manifest.context() as ctx, c2pa.Reader(str(video), context=ctx) as reader:
        store = json.loads(reader.json())
    for entry in store["manifests"].values():
        assert entry.get("thumbnail") is None
        assert all(ingredient.get("thumbnail") is None for ingredient in entry.get("ingredients", []))


def test_verify_names_the_failing_check_for_bad_files(cli, tmp_path):
    text, truncated, plain = tmp_path / "notes.mp4", tmp_path / "cut.mp4", tmp_path / "plain.mp4"
    text.write_text("not a video\n" * 20)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", str(plain))
    truncated.write_bytes(plain.read_bytes()[:3000])
    for path in (text, truncated, plain):
        done = cli("verify", path, "--json", check=False)
        report = json.loads(done.stdout)
        assert done.returncode == 1 and not report["ok"] and "Traceback" not in done.stderr
        assert report["checks"][0]["name"] == "manifest present" and not report["checks"][0]["ok"]
    assert json.loads(cli("verify", plain, "--json", check=False).stdout)["trust"] == "no_manifest"


def test_a_damaged_manifest_is_refused_in_one_line_never_a_traceback(signed_run, cli, tmp_path):
    """Bytes of the C2PA store changed: inside an assertion (c2pa then finds no active manifest and raises a
    KeyError), in the manifest's label, and at places from the labels to the signature. Each gives its
    reason in the report, exit status 0 or 1 and never a traceback; the first two fail verification.
    (Some places are the store's padding, which its signature does not cover: SHA256SUMS is for those.)"""
    data = signed_run["video"].read_bytes()
    offset, stores = 0, []
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"uuid" and data[offset + 8:offset + 24] == C2PA_UUID:
            stores.append((offset, size))
        offset += size
    [(start, size)] = stores

    def flipped(at: int, count: int = 4) -> bytes:
        return data[:at] + bytes(b ^ 0xFF for b in data[at:at + count]) + data[at + count:]

    label = data.index(b"urn:c2pa:", start) + len(b"urn:c2pa:")
    damaged = {"assertion": flipped(data.index(signed_run["id"].encode(), start)),
               "label": data[:label] + bytes([data[label] ^ 0x01]) + data[label + 1:]}
    damaged.update({f"at {share}": flipped(start + 24 + int((size - 24) * share)) for share in (0.2, 0.5, 0.8)})
    for name, content in damaged.items():
        path = tmp_path / f"{name.replace(' ', '-')}.mp4"
        path.write_bytes(content)
        done = cli("verify", path, check=False)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, (name, done.stderr)
        if name in ("assertion", "label"):
            assert done.returncode == 1 and "NOT VERIFIED" in done.stdout, name
    broken = json.loads(cli("verify", tmp_path / "assertion.mp4", "--json", check=False).stdout)
    assert not broken["ok"] and broken["trust"] == "invalid" and broken["checks"][0]["name"] == "manifest present"
    assert "manifest store is damaged" in broken["checks"][0]["detail"]


def test_configured_keys_sign_and_a_ca_certificate_is_refused_at_start(cli, tmp_path):
    keys = cli("keys", "init-test-ca", "--out", tmp_path / "keys").stdout
    assert "[signing]" in keys and (tmp_path / "keys" / "signer-key.pem").stat().st_mode & 0o077 == 0
    env = {"EVIDENCE_SIGNING__CERTIFICATE_CHAIN": str(tmp_path / "keys" / "ca.pem"),
           "EVIDENCE_SIGNING__PRIVATE_KEY": str(tmp_path / "keys" / "signer-key.pem")}
    refused = cli("worker", "--once", check=False, **env)
    assert refused.returncode == 2 and "signing" in refused.stderr and "Traceback" not in refused.stderr


def test_a_kms_style_callback_signer_signs(tmp_path):
    """The key stays behind a callback (as with AWS KMS kms.sign): the library only ever sees signatures."""
    paths = credentials.make_test_ca(tmp_path / "ca")
    local = credentials.from_files(paths["chain"], paths["key"], paths["ca"])
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(paths["key"].read_bytes(), password=None)
    calls = []

    def remote_sign(data: bytes) -> bytes:   # what a KMS client would do with the digest request
        calls.append(len(data))
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    behind = credentials.Credentials(local.chain_pem, remote_sign, "ES256", local.anchors_pem)
    clip, signed = tmp_path / "clip.mp4", tmp_path / "signed.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", str(clip))
    definition = manifest.manifest("signed.mp4", {"name": "t", "version": "1"}, [], {"original_sha256": "x"},
                                   manifest.parent_ingredient("clip", "video/mp4"))
    manifest.sign(clip, signed, definition, behind)
    assert calls and verify(signed, local.anchors_pem)["trust"] == "trusted"


def test_the_worker_signs_with_a_key_that_stays_in_kms(aws_endpoint, cli, tmp_path, tiny_video):
    """The KMS is a real KMS-speaking server on loopback: the worker signs through kms.sign over HTTP."""
    from cryptography.hazmat.primitives import serialization

    client = aws_client("kms", aws_endpoint)
    env = {**AWS_ENV, "EVIDENCE_SIGNING__KMS_ENDPOINT_URL": aws_endpoint,
           "EVIDENCE_SIGNING__KMS_REGION": "eu-central-1"}
    key_id = client.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    other = client.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["KeyId"]
    public = serialization.load_der_public_key(client.get_public_key(KeyId=key_id)["PublicKey"])
    paths = credentials.make_test_ca(tmp_path / "kms", signer_public_key=public)
    assert sorted(p.name for p in (tmp_path / "kms").iterdir()) == ["ca.pem", "signer-chain.pem"]  # no key file
    env = {**env, "EVIDENCE_SIGNING__CERTIFICATE_CHAIN": str(paths["chain"]),
           "EVIDENCE_SIGNING__TRUST_ANCHORS": str(paths["ca"])}
    evidence_id = cli.json("ingest", tiny_video)["ingested"][0]["evidence_id"]

    # A key id whose public half is not the certificate's stops the worker before any run.
    refused = cli("worker", "--once", check=False, EVIDENCE_SIGNING__KMS_KEY_ID=other, **env)
    assert refused.returncode == 2 and "does not belong to the signing certificate" in refused.stderr
    assert "Traceback" not in refused.stderr

    cli("worker", "--once", timeout=300, EVIDENCE_SIGNING__KMS_KEY_ID=key_id, **env)
    [run] = cli.json("show", evidence_id)["runs"]
    report = cli.json("verify", Path(run["location"]) / "redacted.mp4", "--trust-anchors", paths["ca"])
    assert report["ok"] and report["trust"] == "trusted" and report["original_sha256"] == evidence_id
    # The manifest names the models that saw and heard the footage, with their files' SHA-256.
    models = report["evidence"]["models"]
    assert any(entry["kind"] == "face-detector" for entry in models.values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", sha) for entry in models.values() for sha in entry["files"].values())


def test_a_clip_of_an_altered_parent_fails_the_chain_though_its_own_signature_is_good(tmp_path):
    paths = credentials.make_test_ca(tmp_path / "ca")
    keys = credentials.from_files(paths["chain"], paths["key"], paths["ca"])
    raw, parent, altered, child = (tmp_path / f"{n}.mp4" for n in ("raw", "parent", "altered", "child"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", str(raw))
    software = {"name": "t", "version": "1"}
    evidence = {"evidence_id": "ab" * 32, "original_sha256": "ab" * 32}
    manifest.sign(raw, parent, manifest.manifest("parent.mp4", software, [], evidence,
                                                 manifest.parent_ingredient("original", None)), keys)
    data = bytearray(parent.read_bytes())
    data[_mdat_middle(bytes(data))] ^= 1
    altered.write_bytes(bytes(data))
    manifest.sign(altered, child, manifest.manifest("child.mp4", software, [], evidence,
                                                    manifest.parent_ingredient("parent.mp4", "video/mp4", "source")),
                  keys, signed_parent=altered)
    report = verify(child, keys.anchors_pem)
    chain = next(c for c in report["checks"] if c["name"] == "chain reaches the original")
    assert report["trust"] == "trusted" and not report["ok"]
    assert not chain["ok"] and "bmffHash.mismatch" in chain["detail"]


def _signed_by(ca: dict, source: Path, target: Path, evidence: dict, title: str, parent: Path | None = None) -> None:
    keys = credentials.from_files(ca["chain"], ca["key"], ca["ca"])
    ingredient = manifest.parent_ingredient(parent.name if parent else "original", "video/mp4",
                                            "source" if parent else "original")
    manifest.sign(source, target, manifest.manifest(title, {"name": "t", "version": "1"}, [], evidence, ingredient),
                  keys, signed_parent=parent)


def test_the_chain_holds_only_through_trusted_links_naming_one_original(tmp_path):
    ours, theirs = credentials.make_test_ca(tmp_path / "ours"), credentials.make_test_ca(tmp_path / "theirs")
    raw = tmp_path / "raw.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libx264", str(raw))
    original = {"evidence_id": "ab" * 32, "original_sha256": "ab" * 32}
    anchors = ours["ca"].read_text()
    cases = {
        "a parent signed by someone else": (theirs, original, original, "not signed by a trusted signer"),
        "a parent naming another original": (ours, {"evidence_id": "cd" * 32, "original_sha256": "cd" * 32},
                                             original, "different originals"),
        "a parent that is not ours": (ours, {"note": "no evidence record"}, original, "no evidence record"),
    }
    for number, (signer, parent_evidence, clip_evidence, said) in enumerate(cases.values()):
        parent, clip = tmp_path / f"parent{number}.mp4", tmp_path / f"clip{number}.mp4"
        _signed_by(signer, raw, parent, parent_evidence, "redacted.mp4")
        _signed_by(ours, raw, clip, clip_evidence, "clip.mp4", parent=parent)
        report = verify(clip, anchors)
        chain = next(c for c in report["checks"] if c["name"] == "chain reaches the original")
        assert report["trust"] == "trusted" and not chain["ok"] and said in chain["detail"], chain
        assert not report["ok"] and report["original_sha256"] is None


def test_a_camera_manifest_in_the_original_never_reaches_the_masked_video(cli, tmp_path):
    """A camera or editor may sign footage with a manifest holding a preview, GPS and names: none travels on."""
    camera = credentials.make_test_ca(tmp_path / "camera")
    raw, signed = tmp_path / "raw.mp4", tmp_path / "camera.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-f", "lavfi", "-i",
           "sine=duration=2", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(raw))
    _signed_by(camera, raw, signed, {"gps": "GPS-MARKER-43.31,45.69", "author": "WITNESS-NAME-MARKER"},
               "camera original")
    assert b"WITNESS-NAME-MARKER" in signed.read_bytes()
    evidence_id = cli.json("ingest", signed)["ingested"][0]["evidence_id"]
    cli("worker", "--once", timeout=300)
    [run] = cli.json("show", evidence_id)["runs"]
    video = Path(run["location"]) / "redacted.mp4"
    data = video.read_bytes()
    assert b"WITNESS-NAME-MARKER" not in data and b"GPS-MARKER" not in data
    report = cli.json("verify", video, "--trust-anchors", cli.home / "signing" / "ca.pem")
    assert report["ok"] and len(report["chain"]) == 1 and report["original_sha256"] == evidence_id


def test_verify_says_which_file_it_cannot_read(cli, tmp_path):
    done = cli("verify", SAMPLE_VIDEO, "--trust-anchors", tmp_path / "missing.pem", check=False)
    assert done.returncode == 2 and "missing.pem" in done.stderr and "Traceback" not in done.stderr
    done = cli("verify", SAMPLE_VIDEO, "--original", tmp_path / "gone.mov", check=False)
    assert done.returncode == 2 and "gone.mov" in done.stderr and "Traceback" not in done.stderr
