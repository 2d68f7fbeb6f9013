"""Logs as their readers need them: JSON lines for machines (nothing else on stderr), readable lines for a
person, and -q / -v; and the worker's exit status tells a script when a job failed for good."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
from pathlib import Path

from support import REPO, Cli, ffmpeg


def test_json_logs_are_one_object_per_line_with_nothing_native_in_between(cli: Cli, tmp_path: Path):
    """OpenCV's and onnxruntime's own warnings (written by their C++ straight to stderr) must not break the
    stream of JSON lines a log collector reads; the redact command loads both."""
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=1", "-pix_fmt", "yuv420p", str(clip))
    done = cli("redact", clip, "--out", tmp_path / "masked.mp4", "--json")
    # Without the native logs limited, onnxruntime writes "[W:onnxruntime:, graph.cc:5809
    # CleanUnusedInitializersAndNodeArgs] Removing initializer ..." here as the networks load.
    for line in [line for line in done.stderr.splitlines() if line.strip()]:
        entry = json.loads(line)          # a native warning here would not parse
        assert {"ts", "level", "logger", "msg"} <= set(entry)


def test_a_person_at_a_terminal_reads_lines_and_can_quiet_or_widen_them(cli: Cli, tmp_path: Path):
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=10:duration=1", "-pix_fmt", "yuv420p", str(clip))
    cli.json("ingest", clip)
    human = cli("--log-format", "human", "worker", "--once", timeout=300)
    started = [line for line in human.stderr.splitlines() if "evidence.worker: worker started" in line]
    assert started and started[0].split()[1] == "info" and "once=True" in started[0]
    assert not human.stderr.lstrip().startswith("{")
    quiet = cli("-q", "worker", "--once")
    assert quiet.stderr.strip() == ""
    verbose = cli("-v", "--log-format", "json", "worker", "--once")
    assert any(json.loads(line)["level"] == "info" for line in verbose.stderr.splitlines())


def test_worker_once_exits_1_when_a_job_was_dead_lettered(cli: Cli, tmp_path: Path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x10\x35\xce" * 2000)
    cli.json("ingest", junk)
    done = cli("worker", "--once", check=False)
    assert done.returncode == 1 and "jobs were dead-lettered" in done.stderr
    assert cli("worker", "--once").returncode == 0     # nothing left to do, nothing failed this time


def test_a_person_watching_the_worker_sees_each_long_step_progress(cli: Cli, tmp_path: Path):
    """On a terminal, the worker draws a bar of the intake's steps and, inside it, one for the step at work
    (frames masked, chunks transcribed)."""
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=3", "-pix_fmt", "yuv420p", str(clip))
    cli.json("ingest", clip)
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # a terminal has a size
    try:
        worker = subprocess.Popen(cli.command("worker", "--once"), cwd=REPO, env=cli.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:       # the terminal closed: the worker is gone
                break
            if not chunk:
                break
            seen += chunk
        assert worker.wait(timeout=120) == 0
    finally:
        os.close(controller)
    text = seen.decode("utf-8", "replace")
    assert "intake steps" in text and re.search(r"redact:\s+\d+%\|", text), text[-2000:]   # counted, not just named
    assert "info evidence.worker: worker started" in text        # and the logs are readable lines there
