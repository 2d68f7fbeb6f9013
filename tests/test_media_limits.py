"""Decompression bombs, streams outside the allowlist, external references, and media tools that must
die with the worker (rules 2, 3, 10, and the appended-ZIP warning of rule 13)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from support import REPO, SAMPLE_VIDEO, Cli, ffmpeg

from pipelines import streams
from pipelines.errors import OverMemoryCeiling, RejectedInput
from pipelines.pipeline import Tools
from pipelines.probe import DEFAULTS, probe_file


def bomb(path: Path, size: str = "16384x8192") -> Path:
    """One H.264 frame far larger than any camera's: a few hundred KB that decode to gigabytes."""
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s={size}:r=25", "-frames:v", "1", "-c:v", "libx264",
           "-preset", "ultrafast", "-threads", "2", str(path))
    return path


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory) -> Path:
    return bomb(tmp_path_factory.mktemp("bomb") / "bomb.mkv")


def test_a_decompression_bomb_is_refused_by_its_frame_size_without_decoding_it(bomb_file: Path):
    code = ("import json, resource, sys\nfrom pathlib import Path\nfrom pipelines.probe import DEFAULTS, probe_file\n"
            "from pipelines.errors import RejectedInput\n"
            "try:\n    probe_file(Path(sys.argv[1]), DEFAULTS)\nexcept RejectedInput as exc:\n    reason = str(exc)\n"
            "print(json.dumps({'reason': reason,"
            " 'children_max_rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")
    done = subprocess.run([sys.executable, "-c", code, str(bomb_file)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    assert "16384x8192" in result["reason"] and "media.max_pixels" in result["reason"], result["reason"]
    assert "EVIDENCE_MEDIA__MAX_PIXELS" in result["reason"]
    # Decoding that frame takes over 400 MB; listing the streams takes a few dozen.
    assert result["children_max_rss_kb"] < 250 * 1024, result


def test_a_frame_allowed_through_still_meets_the_memory_ceiling(bomb_file: Path):
    tools = Tools(max_pixels=200_000_000, memory_limit_bytes=600 * 2**20)
    with pytest.raises(OverMemoryCeiling, match="media.memory_limit_bytes = 629145600"):
        probe_file(bomb_file, DEFAULTS, tools)


def test_a_genuine_8k_recording_under_too_low_a_ceiling_is_told_apart_from_a_damaged_file(tmp_path: Path):
    big = tmp_path / "8k.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=7680x4320:r=25", "-frames:v", "30", "-c:v", "libx264",
           "-preset", "ultrafast", "-threads", "2", str(big))
    with pytest.raises(OverMemoryCeiling, match="ran out of memory.*EVIDENCE_MEDIA__MEMORY_LIMIT_BYTES"):
        probe_file(big, DEFAULTS, Tools(memory_limit_bytes=512 * 2**20))
    facts, _, _ = probe_file(big, DEFAULTS, Tools(memory_limit_bytes=2**30))
    assert (facts["video"]["width"], facts["video"]["height"]) == (7680, 4320)


def test_a_bomb_uploaded_is_dead_lettered_with_the_limit_and_kept(cli: Cli, bomb_file: Path):
    evidence_id = cli.json("ingest", bomb_file)["ingested"][0]["evidence_id"]
    assert cli("worker", "--once", check=False).returncode == 1
    [dead] = cli.json("status")["dead_letters"]
    assert dead["evidence_id"] == evidence_id and "media.max_pixels" in dead["reason"]
    assert dead["attempts"] == 1
    assert cli.json("audit")["ok"]


def with_attachment(tmp_path: Path, kind: str) -> Path:
    clip = tmp_path / "clip.mkv"
    if kind == "tiff":
        picture = tmp_path / "cover.tiff"
        ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x64", "-frames:v", "1", str(picture))
        ffmpeg("-i", str(SAMPLE_VIDEO), "-t", "2", "-c", "copy", "-attach", str(picture),
               "-metadata:s:t:0", "mimetype=image/tiff", "-metadata:s:t:0", "filename=cover.tiff", str(clip))
    else:
        subtitles = tmp_path / "words.ass"
        subtitles.write_text("[Script Info]\nScriptType: v4.00+\n\n[Events]\nFormat: Layer, Start, End, Style, Text\n"
                             "Dialogue: 0,0:00:00.00,0:00:01.00,Default,hello\n")
        ffmpeg("-i", str(SAMPLE_VIDEO), "-i", str(subtitles), "-t", "2", "-map", "0", "-map", "1", "-c", "copy",
               str(clip))
    return clip


@pytest.mark.parametrize("kind, reason", [("tiff", "stream 2: attached picture 'tiff' is not on the allowlist"),
                                          ("ass", "stream 2: subtitle codec 'ass' is not on the allowlist")])
def test_every_stream_is_judged_and_the_refused_one_is_named(tmp_path: Path, kind: str, reason: str):
    with pytest.raises(RejectedInput, match=reason):
        probe_file(with_attachment(tmp_path, kind), DEFAULTS)


def test_allowlisted_subtitles_and_data_streams_pass(tmp_path: Path):
    subtitled = tmp_path / "subtitled.mp4"
    srt = tmp_path / "words.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    ffmpeg("-i", str(SAMPLE_VIDEO), "-i", str(srt), "-t", "2", "-map", "0", "-map", "1", "-c", "copy",
           "-c:s", "mov_text", str(subtitled))
    facts, _, _ = probe_file(subtitled, DEFAULTS)
    assert [s["type"] for s in facts["streams"]] == ["video", "audio", "subtitle"]


def logging_tool(folder: Path, tool: str) -> Path:
    """The real tool behind a shim that records every argument list it is given."""
    shim = folder / tool
    shim.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {folder}/calls.txt\nexec {tool} \"$@\"\n")
    shim.chmod(0o755)
    return shim


def test_every_call_names_only_allowlisted_decoders_a_pixel_cap_and_threads(tmp_path: Path):
    tools = Tools(ffmpeg=str(logging_tool(tmp_path, "ffmpeg")), ffprobe=str(logging_tool(tmp_path, "ffprobe")),
                  threads=2)
    with pytest.raises(RejectedInput):
        probe_file(with_attachment(tmp_path, "tiff"), DEFAULTS, tools)
    probe_file(SAMPLE_VIDEO, DEFAULTS, tools)
    calls = [line.split() for line in (tmp_path / "calls.txt").read_text().splitlines()]
    media_calls = [args for args in calls if "-version" not in args]
    assert len(media_calls) >= 6
    for args in media_calls:
        allowed = args[args.index("-codec_whitelist") + 1].split(",")
        assert "h264" in allowed and "tiff" not in allowed and "ass" not in allowed
        assert args[args.index("-threads") + 1] == "2"
        assert args[args.index("-protocol_whitelist") + 1] == "file,pipe"
        assert "-format_whitelist" in args
    assert set(streams.codec_whitelist().split(",")) >= {"h264", "aac", "hevc", "mjpeg"}


def _patch_box_sizes(data: bytearray, path_offsets: list[int], delta: int) -> None:
    for offset in path_offsets:
        size = struct.unpack(">I", data[offset:offset + 4])[0]
        data[offset:offset + 4] = struct.pack(">I", size + delta)


def external_reference(source: Path, target: Path, url: bytes) -> Path:
    """``source`` (index at the end) with its video track's data reference pointing at ``url``."""
    data = bytearray(source.read_bytes())
    dref = data.index(b"dref")
    entry = data.index(b"url ", dref) - 4   # the self-contained 'url ' entry: size, type, flags=1
    assert struct.unpack(">I", data[entry:entry + 4])[0] == 12
    replacement = struct.pack(">I4sI", 12 + len(url) + 1, b"url ", 0) + url + b"\0"
    delta = len(replacement) - 12
    ancestors = []
    for kind in (b"moov", b"trak", b"mdia", b"minf", b"dinf"):
        ancestors.append(data.rindex(kind, 0, dref) - 4)
    _patch_box_sizes(data, [*ancestors, dref - 4], delta)
    data[entry:entry + 12] = replacement
    target.write_bytes(bytes(data))
    return target


def test_a_mov_taking_its_media_from_a_url_is_refused_with_that_reason(tmp_path: Path):
    plain = tmp_path / "plain.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    probe_file(plain, DEFAULTS)
    hostile = external_reference(plain, tmp_path / "hostile.mov", b"http://203.0.113.9/track.mov")
    with pytest.raises(RejectedInput, match="refers to media outside itself.*http://203.0.113.9/track.mov"):
        probe_file(hostile, DEFAULTS)


def test_bytes_appended_after_an_mp4_are_reported(tmp_path: Path):
    archive = tmp_path / "extra.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "hidden")
    glued = tmp_path / "glued.mp4"
    glued.write_bytes(SAMPLE_VIDEO.read_bytes() + archive.read_bytes())
    _, _, warnings = probe_file(glued, DEFAULTS)
    assert any(f"{archive.stat().st_size} bytes follow the end of the MP4 structure (a ZIP archive)" in w
               for w in warnings), warnings
    assert probe_file(SAMPLE_VIDEO, DEFAULTS)[2] == []


def hanging_ffprobe(folder: Path) -> Path:
    """A real ffprobe that never finishes: it reads an endless generated stream."""
    shim = folder / "ffprobe"
    shim.write_text(f"#!/bin/sh\necho $$ > {folder}/ffprobe.pid\n"
                    "exec ffprobe -v error -f lavfi -i testsrc=r=1 -show_frames -of json > /dev/null\n")
    shim.chmod(0o755)
    return shim


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_media_tools_die_with_a_worker_killed_with_9(cli: Cli, tmp_path: Path):
    cli.env["EVIDENCE_MEDIA__FFPROBE"] = str(hanging_ffprobe(tmp_path))
    cli.json("ingest", SAMPLE_VIDEO)
    worker = cli.popen("worker", "--once")
    pid_file = tmp_path / "ffprobe.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert worker.poll() is None, worker.stderr.read()
        assert time.monotonic() < deadline, "ffprobe never started"
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        time.sleep(0.5)
        assert alive(pid), "the test is void: ffprobe is not running"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(pid):
            assert time.monotonic() < deadline, "ffprobe outlived the worker that started it"
            time.sleep(0.05)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_compressed_movie_header_whose_references_cannot_be_checked_is_refused(tmp_path: Path):
    plain = tmp_path / "plain.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    data = plain.read_bytes()
    start = data.rindex(b"moov") - 4
    moov = data[start:start + struct.unpack(">I", data[start:start + 4])[0]]
    assert start + len(moov) == len(data), "the test needs the movie header at the end"
    hostile_moov = external_reference(plain, tmp_path / "x.mov", b"file:///etc/passwd").read_bytes()[start:]
    packed = zlib.compress(hostile_moov)  # a data reference to another file, hidden from a plain box walk
    dcom = struct.pack(">I4s4s", 12, b"dcom", b"zlib")
    cmvd = struct.pack(">I4sI", 12 + len(packed), b"cmvd", len(hostile_moov)) + packed
    cmov = struct.pack(">I4s", 8 + len(dcom) + len(cmvd), b"cmov") + dcom + cmvd
    hidden = tmp_path / "hidden.mov"
    hidden.write_bytes(data[:start] + struct.pack(">I4s", 8 + len(cmov), b"moov") + cmov)
    with pytest.raises(RejectedInput, match="movie header is compressed"):
        probe_file(hidden, DEFAULTS)


def test_text_glued_after_an_mp4_is_reported_even_when_it_reads_like_a_huge_box(tmp_path: Path):
    glued = tmp_path / "glued.mp4"
    tail = b"echo pwned; rm -rf ~ # anything at all\n"
    glued.write_bytes(SAMPLE_VIDEO.read_bytes() + tail)
    _, _, warnings = probe_file(glued, DEFAULTS)
    assert any(f"{len(tail)} bytes follow the end of the MP4 structure" in w for w in warnings), warnings


def test_references_and_glued_bytes_are_found_wherever_they_hide(tmp_path: Path):
    plain = tmp_path / "plain.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(plain))
    hostile = bytearray(external_reference(plain, tmp_path / "hostile.mov", b"file:///etc/passwd").read_bytes())
    # Move dinf (with its dref) from minf up into mdia: FFmpeg still reads it there.
    dinf = hostile.index(b"dinf") - 4
    dinf_box = bytes(hostile[dinf:dinf + struct.unpack(">I", hostile[dinf:dinf + 4])[0]])
    minf = hostile.rindex(b"minf", 0, dinf) - 4
    del hostile[dinf:dinf + len(dinf_box)]
    hostile[minf:minf] = dinf_box  # same sizes for moov, trak and mdia; minf loses the box it no longer holds
    _patch_box_sizes(hostile, [minf + len(dinf_box)], -len(dinf_box))
    moved = tmp_path / "moved.mov"
    moved.write_bytes(bytes(hostile))
    with pytest.raises(RejectedInput, match="file:///etc/passwd"):
        probe_file(moved, DEFAULTS)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "hidden")
    data = SAMPLE_VIDEO.read_bytes()
    for disguise in (b"\0\0\0\0mdat", struct.pack(">I", 0xFFFFFF) + b"mdat",
                     struct.pack(">I", 8 + 70000 + archive.stat().st_size) + b"free" + b"\0" * 70000):
        glued = tmp_path / "glued.mp4"
        glued.write_bytes(data + disguise + archive.read_bytes())
        _, _, warnings = probe_file(glued, DEFAULTS)
        assert any("bytes follow the end of the MP4 structure" in w for w in warnings), (disguise[:8], warnings)
