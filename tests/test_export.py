"""Exported clips for prosecutors: real intake runs, real ffmpeg cuts, real c2pa signatures, a real browser."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from pypdf import PdfReader
from support import Cli

from pipelines.export.clip import Range
from pipelines.export.excerpt import excerpt
from pipelines.transcribe import formats

EXPECTED_FILES = ["SHA256SUMS", "clip.mp4", "custody-report.html", "custody-report.json", "transcript.txt",
                  "transcript.vtt", "trust-anchor.pem", "verification-report.html", "verification-report.json"]


@pytest.fixture
def item(sample_item: dict) -> dict:
    return sample_item


def _frame_times(path: Path) -> list[float]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                           "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [float(line.strip(",")) for line in done.stdout.split()]


def _custody(cli: Cli, evidence_id: str) -> list[dict]:
    path = cli.home / "store" / evidence_id / "custody.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _print_to_pdf(html: Path, pdf: Path, profile: Path) -> subprocess.CompletedProcess:
    # The flags keep a headless Chromium from reaching for Google's services on a closed network.
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync",
                           f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
                           html.as_uri()], capture_output=True, text=True, timeout=120)


def test_an_exported_clip_verifies_offline_back_to_the_original(item, cli, tmp_path):
    out = tmp_path / "for-prosecutor"
    facts = cli.json("export", item["id"][:10], "--from", "00:00:01.000", "--to", "00:00:03.000",
                     "--recipient", "Prosecutor <i>X</i>", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_FILES
    assert all(p.stat().st_mode & 0o077 == 0 for p in [out, *out.iterdir()])
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)

    # Frame-accurate: exactly the masked video's frames from 1 s up to (not including) 3 s, starting at 0.
    wanted = [t for t in _frame_times(item["video"]) if 1.0 - 1e-6 <= t < 3.0 - 1e-6]
    got = _frame_times(out / "clip.mp4")
    assert len(got) == len(wanted) and got[0] == 0.0
    assert facts["clip"]["from"] == "00:00:01.000" and facts["clip"]["duration_s"] == 2.0
    tags = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags:stream_tags",
                                      "-of", "json", str(out / "clip.mp4")], capture_output=True, text=True,
                                     check=True).stdout)
    found = {key for stream in tags.get("streams", []) for key in (stream.get("tags") or {})}
    found |= set((tags.get("format") or {}).get("tags") or {})
    assert found <= {"major_brand", "minor_version", "compatible_brands", "encoder", "language", "handler_name",
                     "vendor_id"}   # container facts only: nothing of the original (device, place, time) is carried

    # With only what is in the folder, the chain reaches the original through the masked video's manifest.
    report = cli.json("verify", out / "clip.mp4", "--trust-anchors", out / "trust-anchor.pem")
    assert report["ok"] and report["trust"] == "trusted" and report["original_sha256"] == item["id"]
    assert [link["title"] for link in report["chain"]] == ["clip.mp4", "redacted.mp4"]
    assert report["chain"][1]["evidence"]["original_sha256"] == item["id"]
    assert [a["action"] for a in report["actions"]] == ["c2pa.opened", "c2pa.edited", "c2pa.transcoded"]
    assert b"c2pa.thumbnail" not in (out / "clip.mp4").read_bytes()
    assert facts["verification"]["ok"] and facts["original"]["sha256"] == item["id"]
    # The masking's own doubts inside the range travel with the clip, re-timed to it.
    review = json.loads((item["video"].parent / "redaction-report.json").read_text())["review"]
    inside = [m for m in review if m["end_s"] > 1.0 and m["start_s"] < 3.0]
    assert len(facts["masking_review"]) == len(inside)
    assert all(0.0 <= m["start_s"] <= m["end_s"] <= 2.0 for m in facts["masking_review"])

    # The report's own c2pa-python command works as printed, in the folder, offline.
    [command] = [step["command"] for step in facts["how_to_verify"] if step["command"].startswith("python3")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", command], cwd=out, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "Trusted"

    exported = [e for e in _custody(cli, item["id"]) if e["event"] == "exported"]
    assert len(exported) == 1 and exported[0]["details"]["recipient"] == "Prosecutor <i>X</i>"
    assert exported[0]["details"]["clip_sha256"] == facts["clip"]["sha256"]

    # A lawyer's copy: the HTML prints in a real browser, fetching nothing, and says what was checked.
    html = (out / "verification-report.html").read_text()
    assert "<i>X</i>" not in html and "&lt;i&gt;X&lt;/i&gt;" in html and "<b>17</b>" not in html
    assert ("moment(s) of this clip were marked" in html) == bool(inside)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html) and "<script" not in html
    pdf = tmp_path / "report.pdf"
    printed = _print_to_pdf(out / "verification-report.html", pdf, tmp_path / "chromium")
    assert printed.returncode == 0, printed.stderr
    assert not re.search(r"net::ERR|Failed to load|Refused to", printed.stderr)
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    squashed = re.sub(r"\s+", "", text)
    assert item["id"] in squashed and facts["clip"]["sha256"] in squashed
    assert "VERIFIED" in text and "FAILED" not in text
    assert sum(name.replace(" ", "") in squashed for name in ("signature valid", "signer trusted",
                                                               "chain reaches the original")) == 3
    assert "Prosecutor<i>X</i>" in squashed and "TEST" in text
    fingerprint = subprocess.run(["openssl", "x509", "-in", str(out / "trust-anchor.pem"), "-noout", "-fingerprint",
                                  "-sha256"], capture_output=True, text=True, check=True).stdout.split("=")[1].strip()
    assert facts["trust_anchor_sha256"] == [fingerprint] and fingerprint.replace(":", "") in squashed.replace(":", "")
    assert exported[0]["details"]["trust_anchor_sha256"] == [fingerprint]
    assert "SHA256SUMSistheexact-bytescheck" in squashed   # and why C2PA's own hash is not that
    assert report["file_sha256"] == facts["clip"]["sha256"]
    assert {"name": "exact bytes as SHA256SUMS lists", "ok": True,
            "detail": f"the file hashes to {facts['clip']['sha256']}"} in report["checks"]

    # The chain of custody travels with the clip, up to the export (logged next), and prints for a court.
    trail = json.loads((out / "custody-report.json").read_text())
    logged = _custody(cli, item["id"])
    assert trail["chain_ok"] and [e["hash"] for e in trail["events"]] == [e["hash"] for e in logged[:-1]]
    assert logged[-1]["event"] == "exported" and logged[-1]["prev"] == trail["head"]
    printed = _print_to_pdf(out / "custody-report.html", tmp_path / "custody.pdf", tmp_path / "chromium")
    assert printed.returncode == 0 and not re.search(r"net::ERR|Failed to load|Refused to", printed.stderr)
    pages = re.sub(r"\s+", "", unicodedata.normalize("NFKC", "".join(   # NFKC: a font's "ff" ligature is ff
        page.extract_text() for page in PdfReader(tmp_path / "custody.pdf").pages)))
    assert "Chainofcustody" in pages and "INTACT" in pages and "NOTINTACT" not in pages
    assert all(e["hash"] in pages and e["event"].replace(" ", "") in pages for e in trail["events"])

    # Bytes added where C2PA's hash may not look (a free box after the last one): whatever that hash says, the
    # exact-bytes check fails, and with it the file.
    with open(out / "clip.mp4", "ab") as clip:
        clip.write(struct.pack(">I4s", 26, b"free") + b"any hidden payload")
    padded = cli("verify", out / "clip.mp4", "--trust-anchors", out / "trust-anchor.pem", "--json", check=False)
    checks = {c["name"]: c["ok"] for c in json.loads(padded.stdout)["checks"]}
    assert padded.returncode == 1 and checks["exact bytes as SHA256SUMS lists"] is False
    assert checks["signature valid"]   # the manifest itself is untouched
    shown = cli("verify", out / "clip.mp4", "--trust-anchors", out / "trust-anchor.pem", check=False).stdout
    assert "FAIL exact bytes as SHA256SUMS lists" in shown and "NOT VERIFIED" in shown
    assert f"file SHA-256 {hashlib.sha256((out / 'clip.mp4').read_bytes()).hexdigest()}" in shown


def test_an_unmasked_export_needs_a_named_authorisation_and_is_logged(item, cli, tmp_path):
    rid = cli.json("reprocess", item["id"], "--set", "redact.policy=none")["run_id"]
    cli("worker", "--once", timeout=300)
    out = tmp_path / "out"
    asks = ["export", item["id"], "--run", rid, "--from", "00:00:00", "--to", "00:00:01.5", "--recipient", "Court",
            "--out", out]
    refused = cli(*asks, check=False)
    assert refused.returncode == 2 and "no masked video" in refused.stderr and not out.exists()
    refused = cli(*asks, "--unredacted", check=False)
    assert refused.returncode == 2 and "--authorised-by" in refused.stderr and not out.exists()
    assert not any(e["event"].startswith(("exported", "unredacted")) for e in _custody(cli, item["id"]))

    facts = cli.json(*asks, "--unredacted", "--authorised-by", "Judge Y", "--reason", "identification in court")
    assert facts["source"]["faces_masked"] is False and facts["verification"]["ok"]
    events = [e for e in _custody(cli, item["id"]) if e["event"] in ("unredacted export authorised", "exported")]
    assert [e["event"] for e in events] == ["unredacted export authorised", "exported"]
    assert events[0]["details"]["authorised_by"] == "Judge Y" and events[1]["details"]["faces_masked"] is False
    assert "FACES ARE NOT MASKED" in (out / "verification-report.html").read_text()
    report = cli.json("verify", out / "clip.mp4", "--trust-anchors", out / "trust-anchor.pem")
    assert report["ok"] and report["evidence"]["faces_masked"] is False


def test_bad_ranges_are_refused_before_anything_is_written(item, cli, tmp_path):
    out = tmp_path / "out"
    for start, end, said in [("00:00:03", "00:00:02", "must end after it starts"),
                             ("00:00:01", "00:00:09", "past the end"), ("00:00:09", "00:00:10", "past the end"),
                             ("3", "00:00:04", "HH:MM:SS"), ("00:00:01", "00:61:00", "HH:MM:SS"),
                             # past the last picture, before the end of the sound: no frame to show
                             ("00:00:04.200", "00:00:04.203", "no video frame")]:
        done = cli("export", item["id"], "--from", start, "--to", end, "--recipient", "P", "--out", out, check=False)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not out.exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    done = cli("export", item["id"], "--from", "00:00:01", "--to", "00:00:02", "--recipient", "P",
               "--out", tmp_path / "taken", check=False)
    assert done.returncode == 2 and "not an empty folder" in done.stderr
    # A right-to-left override would make the report name someone else than the one typed.
    done = cli("export", item["id"], "--from", "00:00:01", "--to", "00:00:02", "--recipient", "Prosecutor \u202eX",
               "--out", out, check=False)
    assert done.returncode == 2 and "U+202E" in done.stderr and "Traceback" not in done.stderr and not out.exists()
    assert not any(e["event"] == "exported" for e in _custody(cli, item["id"]))
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_an_item_that_fails_its_checks_is_not_exported(item, cli, tmp_path):
    record = cli.home / "store" / item["id"] / "evidence.json"
    record.chmod(0o600)
    record.write_text(record.read_text().replace("C-<b>17</b>", "FORGED"))
    done = cli("export", item["id"], "--from", "00:00:01", "--to", "00:00:02", "--recipient", "P",
               "--out", tmp_path / "out", check=False)
    assert done.returncode == 1 and "fails its checks" in done.stderr and "case" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_transcript_excerpt_is_retimed_and_keeps_its_markers():
    words = [{"start": 9.0, "end": 9.5, "word": " раз"}, {"start": 10.5, "end": 11.0, "word": " два"}]
    segments = [
        {"start": 1.0, "end": 3.0, "text": "до", "status": "machine", "model": "whisper-base"},
        {"start": 9.0, "end": 11.0, "text": "раз два", "status": "machine", "words": words, "model": "whisper-base"},
        {"start": 12.0, "end": 14.0, "text": "", "status": "needs_human", "label": "Chechen?", "model": None},
        {"start": 19.0, "end": 22.0, "text": "конец", "status": "machine_flagged", "flags": ["low_confidence"],
         "model": "whisper-base"},
        {"start": 30.0, "end": 31.0, "text": "после", "status": "machine", "model": "whisper-base"},
    ]
    part = excerpt(segments, Range(10.0, 20.0))
    assert [(s["start"], s["end"], s["text"]) for s in part] == [(0.0, 1.0, "два"), (2.0, 4.0, ""),
                                                                 (9.0, 10.0, "конец")]
    text = formats.text(part)
    assert "[cut at the clip's edge] [00:00:00–00:00:01 machine, unverified: whisper-base] два" in text
    assert "раз" not in text and text.startswith("[Machine-made transcript:")
    assert "[needs human transcription 00:00:02–00:00:04, Chechen?]" in text
    vtt = formats.vtt(part)
    assert vtt.startswith("WEBVTT\n\nNOTE\nMachine-made transcript") and "2 machine-made" in vtt
    assert ("00:00:09.000 --> 00:00:10.000\n[cut at the clip's edge] [machine, unverified: whisper-base; check] "
            "конец") in vtt


@pytest.mark.slow
def test_only_a_run_whose_masking_meets_the_release_floor_is_exported(item, cli, tmp_path):
    """A reprocess with a detection threshold of 0.95 masks far fewer faces: its own leak check fails the job;
    kept for review instead, its video may not leave."""
    cli.json("reprocess", item["id"], "--set", "redact.min_score=0.95")
    assert cli("worker", "--once", timeout=300, check=False).returncode == 1
    status = cli.json("status")
    [dead] = status["dead_letters"]
    assert "the leak check (centerface) found" in dead["reason"] and "was not kept" in dead["reason"]
    assert dead["attempts"] == 1
    assert [r["status"] for r in cli.json("show", item["id"])["runs"]] == ["committed", "failed"]
    weak = cli.json("reprocess", item["id"], "--set", "redact.min_score=0.95",
                    "--set", "redact.leak_check=review")["run_id"]
    cli("worker", "--once", timeout=300)
    asks = ["export", item["id"], "--from", "00:00:01", "--to", "00:00:02", "--recipient", "Court"]
    refused = cli(*asks, "--run", weak, "--out", tmp_path / "weak", check=False)
    assert refused.returncode == 2 and f"run {weak}" in refused.stderr and "may not be released" in refused.stderr
    assert "redact.min_score = 0.95 where [release] asks for at most 0.15" in refused.stderr
    assert "its leak check found" in refused.stderr
    assert not (tmp_path / "weak").exists()
    facts = cli.json(*asks, "--out", tmp_path / "out")   # the newest releasable run, named in the report
    assert facts["source"]["run_id"] == item["run"]["run_id"] != weak
    stricter = cli(*asks, "--out", tmp_path / "floor", check=False, EVIDENCE_RELEASE__MAX_MIN_SCORE="0.1")
    assert stricter.returncode == 2 and "nor may any of its 2 masked runs" in stricter.stderr


def test_custody_show_lists_every_event_in_order_and_catches_an_edited_one(item, cli, tmp_path):
    evidence_id = item["id"]
    logged = _custody(cli, evidence_id)
    shown = cli.json("custody", "show", evidence_id[:8], "--json")
    assert shown["chain_ok"] and shown["count"] == len(logged) and shown["head"] == logged[-1]["hash"]
    assert [(e["seq"], e["event"], e["hash"]) for e in shown["events"]] == \
        [(n, e["event"], e["hash"]) for n, e in enumerate(logged)]
    text = cli("custody", "show", evidence_id).stdout.splitlines()
    assert len(text) == len(logged) + 1 and text[-1].startswith(f"chain verifies: {len(logged)} events")
    page = tmp_path / "custody.html"
    cli("custody", "show", evidence_id, "--html", page)
    assert page.stat().st_mode & 0o777 == 0o600 and "INTACT" in page.read_text()
    again = cli("custody", "show", evidence_id, "--html", page, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    nowhere = cli("custody", "show", evidence_id, "--html", tmp_path / "no-such-folder" / "c.html", check=False)
    assert nowhere.returncode == 2 and "no-such-folder" in nowhere.stderr and "Traceback" not in nowhere.stderr

    # Someone edits who did an earlier event: the chain no longer verifies, and both forms say so.
    log = cli.home / "store" / evidence_id / "custody.jsonl"
    log.parent.chmod(0o700)
    log.chmod(0o600)
    lines = log.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "actor": "someone else"}, separators=(",", ":"), sort_keys=True)
    log.write_text("\n".join(lines) + "\n")
    broken = cli("custody", "show", evidence_id, "--html", tmp_path / "broken.html", check=False)
    assert broken.returncode == 1 and "CHAIN BROKEN" in broken.stdout
    assert "NOT INTACT" in (tmp_path / "broken.html").read_text()


def test_a_home_that_lost_its_signing_folder_is_told_how_to_export_again(item, cli, tmp_path):
    """A restored or moved home makes a new trial CA: the old masked videos no longer chain to it. Export
    refuses with what to do, and does it once the old signing folder is back."""
    shutil.move(cli.home / "signing", tmp_path / "escrowed-signing")
    asks = ["export", item["id"], "--from", "00:00:01", "--to", "00:00:02", "--recipient", "Court"]
    refused = cli(*asks, "--out", tmp_path / "refused", check=False)
    assert refused.returncode == 1 and "signer trusted" in refused.stderr and "signing/ folder" in refused.stderr
    assert not (tmp_path / "refused").exists()
    shutil.rmtree(cli.home / "signing")                       # the new trial CA the failed export made
    shutil.move(tmp_path / "escrowed-signing", cli.home / "signing")
    assert cli.json(*asks, "--out", tmp_path / "exported")["verification"]["ok"]
