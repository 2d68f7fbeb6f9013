"""probe on real media made by the real ffmpeg, and on hostile files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from support import SAMPLE_VIDEO, ffmpeg

from pipelines import ffmpeg_cli
from pipelines.errors import MediaToolError, RejectedInput
from pipelines.pipeline import Tools
from pipelines.probe import DEFAULTS, probe_file


def probe(path: Path, **params):
    return probe_file(path, {**DEFAULTS, **params})


def test_a_real_video_is_described(tmp_path: Path):
    facts, restricted, warnings = probe(SAMPLE_VIDEO)
    assert facts["container"] == "mp4/mov/3gp/m4a"
    assert facts["duration_s"] == pytest.approx(4.2, abs=0.05)
    video, audio = facts["video"], facts["audio"]
    assert (video["codec"], video["width"], video["height"], video["frame_rate"]) == ("h264", 1920, 1080, 25.0)
    assert video["variable_frame_rate"] is False and video["rotation"] == 0
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 48000, 2)
    assert facts["decode_check"]["head"]["frames"] > 50 and facts["decode_check"]["tail"]["frames"] > 50
    assert warnings == []


def test_an_audio_recorders_file_is_accepted(shared_data: Path):
    facts, _, _ = probe(shared_data / "speech-ru" / "vm-nobox.flac")
    assert (facts["container"], facts["has_video"], facts["audio"]["sample_rate"]) == ("flac", False, 16000)


def test_identifying_metadata_is_restricted_and_rotation_and_vfr_are_recorded(tmp_path: Path):
    plain, tagged = tmp_path / "plain.mp4", tmp_path / "tagged.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=3", "-f", "lavfi", "-i", "sine=d=3",
           "-vf", r"select='not(eq(mod(n\,3)\,0))'", "-vsync", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(plain))
    ffmpeg("-i", str(plain), "-c", "copy", "-movflags", "use_metadata_tags",
           "-metadata", "location=+43.3180+045.6981/", "-metadata", "com.apple.quicktime.make=Apple",
           "-metadata", "com.apple.quicktime.model=iPhone 12", "-metadata", "creation_time=2026-01-02T03:04:05Z",
           "-metadata:s:v:0", "rotate=90", str(tagged))
    facts, restricted, _ = probe(tagged)
    assert restricted["location"] == "+43.3180+045.6981/"
    assert restricted["device"]["make"] == "Apple" and restricted["device"]["model"] == "iPhone 12"
    assert restricted["creation_time"].startswith("2026-01-02T03:04:05")
    public = json.dumps(facts)
    for secret in ("43.3180", "iPhone", "Apple", "2026-01-02"):
        assert secret not in public, f"{secret} leaked into public facts"
    assert abs(facts["video"]["rotation"]) == 90
    assert (facts["video"]["display_width"], facts["video"]["display_height"]) == (240, 320)
    assert facts["video"]["variable_frame_rate"] is True


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def truncated(source: Path, target: Path, faststart: bool) -> Path:
    if faststart:
        remuxed = target.with_suffix(".full.mp4")
        ffmpeg("-i", str(source), "-c", "copy", "-movflags", "+faststart", str(remuxed))
        source = remuxed
    data = source.read_bytes()
    return write(target, data[: len(data) // 2])


@pytest.mark.parametrize("case, reason", [
    ("text", "text file"),
    ("empty", "empty"),
    ("truncated", "moov atom not found"),
    ("truncated-faststart", "truncated or damaged"),
    ("concat", "concat script"),
    ("one-pixel", "1x1 pixels"),
    ("random", "not an allowed audio/video container"),
])
def test_bad_input_is_rejected_with_a_clear_reason(tmp_path: Path, case: str, reason: str):
    path = tmp_path / f"{case}.mp4"
    if case == "text":
        write(path, "Протокол допроса. This is a text file renamed to .mp4\n".encode())
    elif case == "empty":
        write(path, b"")
    elif case == "truncated":
        truncated(SAMPLE_VIDEO, path, faststart=False)
    elif case == "truncated-faststart":
        truncated(SAMPLE_VIDEO, path, faststart=True)
    elif case == "concat":
        write(path, b"ffconcat version 1.0\nfile '/etc/passwd'\n")
    elif case == "one-pixel":
        path = tmp_path / "one.mkv"
        ffmpeg("-f", "lavfi", "-i", "nullsrc=s=16x16:d=1", "-vf", "scale=1:1", "-c:v", "ffv1", str(path))
    else:
        write(path, os.urandom(4096))
    with pytest.raises(RejectedInput, match=reason):
        probe(path)


def test_limits_are_parameters(tmp_path: Path):
    with pytest.raises(RejectedInput, match="the limit is 2 s"):
        probe(SAMPLE_VIDEO, max_duration_s=2.0)
    with pytest.raises(RejectedInput, match="bytes; the limit is 1000 bytes"):
        probe(SAMPLE_VIDEO, max_size_bytes=1000)


class FifoCanary:
    """A named pipe that records whether anything opened it for reading."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self.opened_by_someone_else = False
        self._checking_done = False
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the pipe
        self.opened_by_someone_else = not self._checking_done
        os.close(fd)

    def close(self) -> bool:
        self._checking_done = True
        os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))  # unblock the writer ourselves
        self._thread.join(timeout=5)
        return self.opened_by_someone_else


@pytest.mark.parametrize("target", ["fifo", "url"])
def test_playlists_are_rejected_and_never_followed(tmp_path: Path, target: str):
    canary = FifoCanary(tmp_path / "secret")
    entry = str(canary.path) if target == "fifo" else "http://127.0.0.1:9/leak.ts"
    playlist = write(tmp_path / "clip.mp4",
                     f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{entry}\n"
                     f"#EXTINF:10,\n/etc/passwd\n#EXT-X-ENDLIST\n".encode())
    with pytest.raises(RejectedInput, match="HLS/M3U playlist"):
        probe(playlist)
    # Second gate: even asked directly, ffprobe may only use the demuxer we name.
    with pytest.raises(MediaToolError, match="not on whitelist"):
        ffmpeg_cli.ffprobe_json(playlist, demuxer="mov", tools=Tools(timeout_s=30))
    assert not canary.close(), "the playlist's entry was opened"


def test_a_hung_tool_is_stopped_by_its_timeout():
    with pytest.raises(MediaToolError, match="ran longer than"):
        ffmpeg_cli.run_tool(["sleep", "5"], Tools(timeout_s=0.2))


def test_ffmpeg_commands_are_argument_lists_with_the_safety_options(tmp_path: Path):
    args = ffmpeg_cli.decode_args(tmp_path / "-i evil;rm -rf ~.mp4", demuxer="mov", seconds=3,
                                  tools=Tools(threads=3, max_pixels=1000))
    assert args[args.index("-protocol_whitelist") + 1] == "file,pipe"
    assert args[args.index("-format_whitelist") + 1] == "mov"
    assert "h264" in args[args.index("-codec_whitelist") + 1].split(",")
    assert "tiff" not in args[args.index("-codec_whitelist") + 1].split(",")
    assert args[args.index("-threads") + 1] == "3" and args[args.index("-max_pixels") + 1] == "1000"
    assert args[args.index("-i") + 1] == f"file:{tmp_path}/-i evil;rm -rf ~.mp4"
