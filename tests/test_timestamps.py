"""Trusted time: RFC 3161 time-stamps from a real authority on loopback (OpenSSL's), on signatures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import time
from pathlib import Path

from cryptography import x509
from support import ffmpeg

from pipelines.provenance import credentials, manifest
from pipelines.provenance.verify import verify
from worker.backends.local import LocalStore
from worker.record import stamps


def _sign(source: Path, target: Path, creds: credentials.Credentials) -> None:
    definition = manifest.manifest(target.name, {"name": "t", "version": "1"}, [],
                                   {"original_sha256": "0" * 64, "evidence_id": "0" * 64},
                                   manifest.parent_ingredient("original", "video/mp4"))
    manifest.sign(source, target, definition, creds)


def test_a_signature_stamped_while_its_certificate_was_valid_still_verifies_after_it_expired(tsa, tmp_path):
    """A signing certificate of a few seconds: the stamped signature verifies after it expired (checked at
    the stamped time), the unstamped one does not, and each says which it is."""
    paths = credentials.make_test_ca(tmp_path / "ca", signer_valid_for=dt.timedelta(seconds=3))
    until = x509.load_pem_x509_certificates(paths["chain"].read_bytes())[0].not_valid_after_utc
    anchors = paths["ca"].read_text() + tsa.root.read_text()
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1", "-c:v", "libx264", str(clip))
    for name, url in (("stamped.mp4", tsa.url), ("unstamped.mp4", None)):
        made = credentials.from_files(paths["chain"], paths["key"], timestamp_url=url)
        _sign(clip, tmp_path / name, dataclasses.replace(made, anchors_pem=anchors))
    assert tsa.requests == 1

    stamped, unstamped = verify(tmp_path / "stamped.mp4", anchors), verify(tmp_path / "unstamped.mp4", anchors)
    assert stamped["ok"] and unstamped["ok"], (stamped["checks"], unstamped["checks"])
    stamp = stamped["timestamp"]
    assert stamp["trusted"] and "test TSA" in stamp["authority"]
    assert abs(dt.datetime.fromisoformat(stamp["time"]) - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    assert unstamped["timestamp"]["time"] is None and unstamped["timestamp"]["certificate_valid_until"]
    # Whoever does not trust the authority is told so, and the stamp no longer vouches for the time.
    assert not verify(tmp_path / "stamped.mp4", paths["ca"].read_text())["timestamp"]["trusted"]

    time.sleep(max(0.0, (until - dt.datetime.now(dt.timezone.utc)).total_seconds() + 1.5))
    later = verify(tmp_path / "stamped.mp4", anchors)
    assert later["ok"] and later["trust"] == "trusted", later["checks"]
    expired = verify(tmp_path / "unstamped.mp4", anchors)
    assert not expired["ok"]
    assert "signingCredential.expired" in " ".join(c["detail"] for c in expired["checks"] if not c["ok"])


def test_a_time_stamp_authority_that_does_not_answer_signs_nothing(tsa, tmp_path):
    paths = credentials.make_test_ca(tmp_path / "ca")
    clip, target = tmp_path / "clip.mp4", tmp_path / "signed.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1", "-c:v", "libx264", str(clip))
    tsa.up = False
    made = credentials.from_files(paths["chain"], paths["key"], paths["ca"], timestamp_url=tsa.url)
    try:
        _sign(clip, target, made)
    except manifest.TimestampUnavailable as exc:
        assert tsa.url in str(exc) and exc.retryable   # an outage: the job waits and is tried again
    else:
        raise AssertionError("signed without the time-stamp that was asked for")
    assert not target.exists()


def test_the_worker_stamps_what_it_signs_and_waits_out_an_authority_that_is_down(tsa, cli, tiny_video):
    """An authority that does not answer is an outage: the job goes back uncounted, nothing is signed
    unstamped; once it answers, the masked video is stamped and verify says by whom."""
    env = {"EVIDENCE_SIGNING__TIMESTAMP_URL": tsa.url, "EVIDENCE_SIGNING__TIMESTAMP_ANCHORS": str(tsa.root)}
    evidence_id = cli.json("ingest", tiny_video)["ingested"][0]["evidence_id"]
    unanchored = cli("worker", "--once", check=False, EVIDENCE_SIGNING__TIMESTAMP_URL=tsa.url)
    assert unanchored.returncode == 2 and "timestamp_anchors" in unanchored.stderr, unanchored.stderr
    tsa.up = False
    paused = cli("worker", "--once", timeout=300, check=False, **env)
    assert paused.returncode == 1 and "time-stamp authority" in paused.stderr, paused.stderr
    assert cli.json("status")["queue"]["queued"] == 1
    [interrupted] = cli.json("show", evidence_id)["runs"]
    assert interrupted["status"] != "committed"
    tsa.up = True
    cli("worker", "--once", timeout=300, **env)
    [run] = [r for r in cli.json("show", evidence_id)["runs"] if r["status"] == "committed"]
    shown = cli("verify", Path(run["location"]) / "redacted.mp4", **env).stdout
    assert "time-stamped" in shown and "test TSA" in shown and "verified (trusted)" in shown, shown
    assert cli.json("status")["queue"]["dead"] == 0
    # Every run and every export stamps the custody head; a log cut back past a stamped head is caught.
    bundle = cli.json("export", evidence_id, "--from", "00:00:00.5", "--to", "00:00:02", "--recipient", "Court",
                      "--out", cli.home.parent / "bundle", **env)
    assert bundle["verification"]["ok"]
    carried = json.loads((cli.home.parent / "bundle" / "custody-report.json").read_text())
    assert carried["chain_ok"] and len(carried["stamps"]) == 1 and carried["stamps"][0]["token"]   # the run's
    audited = cli.json("audit", **env)
    assert audited["ok"], audited
    [item] = audited["results"]
    assert any("2 time-stamped heads" in note for note in item["notes"]), item["notes"]
    log = next((cli.home / "store").glob("*/custody.jsonl"))
    lines = log.read_bytes().splitlines(keepends=True)
    [stamped] = [json.loads(line)["seq"] for line in lines if json.loads(line)["event"] == "exported"]
    os.chmod(log, 0o600)
    log.write_bytes(b"".join(lines[:stamped]))   # a chain that still checks, one export shorter
    cut = cli("audit", check=False, **env)
    assert cut.returncode == 1 and "the custody log was cut back" in cut.stdout, cut.stdout
    shown = cli("custody", "show", evidence_id, check=False, **env)
    assert shown.returncode == 1 and "CHAIN BROKEN" in shown.stdout and "cut back" in shown.stdout


def test_files_planted_beside_the_custody_log_are_reported_never_followed(tmp_path):
    """A FIFO (which would block a reader for good), a link and a stamp under another event's name."""
    store = LocalStore(tmp_path / "store")
    evidence_id = store.put_original(io.BytesIO(b"footage" * 1000), intake={}, actor="t").evidence_id
    folder = Path(store.location(evidence_id)) / "stamps"
    folder.mkdir()
    os.mkfifo(folder / stamps.stamp_name(0))
    (folder / stamps.stamp_name(1)).symlink_to("/etc/passwd")
    (folder / stamps.stamp_name(2)).write_text('{"seq": 5}')
    kept = store.custody_stamps(evidence_id)
    assert len(kept) == 3 and all("damaged" in stamp for stamp in kept)
    found = stamps.problems(kept, store.custody(evidence_id), evidence_id, [])
    assert len(found) == 3 and all("is damaged" in problem for problem in found)
