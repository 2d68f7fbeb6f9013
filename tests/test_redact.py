"""The redact step on real media: coverage of labelled faces, a leak audit by an independent pass,
evidence-grade output (frames, timestamps, audio, metadata, rotation, variable frame rate, anamorphic
pictures), one decoding against two, bad input and the one-off command (the staff policy: test_staff_policy)."""

from __future__ import annotations

import json
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import SHARED_DATA, ffmpeg

from models.registry import Registry
from pipelines import registry as pipelines
from pipelines.errors import RejectedInput
from pipelines.pipeline import DEFAULT_TOOLS, StepContext
from pipelines.probe import probe_file
from pipelines.redact import audit, detect, masks, video
from pipelines.redact import step as redact

YUNET = Path(redact.__file__).resolve().parents[2] / "models" / "bundled" / "yunet-2023mar" / "model.onnx"
FILL = np.array(masks._FILL_BGR, dtype=np.int16)


def run_redact(path: Path, workdir: Path, staff=(), **overrides) -> dict:
    """The intake's probe and redact steps on ``path``, as the runner would call them."""
    intake = pipelines.get("intake")
    params = intake.resolve_params({f"redact.{k}": v for k, v in overrides.items()})
    facts, _, _ = probe_file(path, intake.step_params(intake.steps[0], params))
    workdir.mkdir(parents=True, exist_ok=True)
    step = next(s for s in intake.steps if s.name == "redact")
    context = StepContext(evidence_id="", original=path.resolve(), workdir=workdir, facts={"probe": facts},
                          params=intake.step_params(step, params), models=Registry(), staff=tuple(staff))
    result = step.run(context)
    return {"facts": dict(result.facts), "files": dict(result.files), "warnings": list(result.warnings)}


def decoded(path: Path, tmp: Path) -> list[np.ndarray]:
    return [f.image for f in video.frames(path, DEFAULT_TOOLS, tmp / f"{path.stem}-read.log")]


def frame_times(path: Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(",")[0] for line in out.split() if line[:1].isdigit()]


def audio_packets(path: Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                          "packet=pts,data_hash", "-show_data_hash", "sha256", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def masked_share(frame: np.ndarray, x: int, y: int, w: int, h: int) -> float:
    """The share of the box's pixels painted with the mask's fill colour (within encoding noise)."""
    region = frame[y:y + h, x:x + w].astype(np.int16)
    return float(np.mean(np.all(np.abs(region - FILL) <= 14, axis=2)))


def labelled_boxes(folder: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    found: dict[str, list] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(folder / name).getroot().iter("image"):
            found.setdefault(image.get("file"), []).extend(
                (int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height")))
                for b in image.iter("box"))
    return found


@pytest.mark.slow
def test_labelled_faces_are_covered(shared_data, tmp_path):
    boxes = labelled_boxes(shared_data / "faces")
    covered, total, misses = 0, 0, []
    for name, faces in boxes.items():
        clip = tmp_path / f"{Path(name).stem}.mp4"
        # A still photo as a short clip; the crop only drops an odd last row or column (4:2:0 needs even sides).
        ffmpeg("-loop", "1", "-i", str(shared_data / "faces" / name), "-t", "0.4", "-r", "25",
               "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0", "-c:v", "libx264", "-crf", "10",
               "-pix_fmt", "yuv420p", str(clip))
        result = run_redact(clip, tmp_path / f"work-{clip.stem}")
        frames = decoded(result["files"]["redacted.mp4"], tmp_path)
        middle = frames[len(frames) // 2]
        for box in faces:
            total += 1
            share = masked_share(middle, *box)
            covered += share >= 0.9
            if share < 0.9:
                misses.append((name, box, round(share, 2)))
    assert total == 43
    assert covered >= 0.95 * total, f"{covered}/{total} covered; missed {misses}"


def _leaks(path: Path, tmp: Path, frames: int | None = None) -> list[dict]:
    return audit.leaks(path, YUNET, DEFAULT_TOOLS, tmp, min_score=0.5, frames=frames)


def _not_the_crest(leak: dict) -> bool:
    # The data README: the heraldic crest above the entrance (its lion heads about 962, 185, 26, 32 on
    # frames 13-16) is not a face. Its animal heads score as faces on many frames while the camera moves
    # (seen here from 925, 147 to 1090, 260, boxes under 70 px), and the crest masked in part still does.
    # Only that window, which holds no person on any frame of this clip, is set aside; anything else counts.
    x, y, w, h = leak["box"]
    return not (880 <= x <= 1150 and 120 <= y <= 300 and max(w, h) < 70)


STREET = "street-walkers-1080p.mp4"
CAMERA_METADATA = ("-metadata", "location=+55.7558+037.6173/", "-metadata", "make=SpyPhone",
                   "-metadata", "model=Model X-77", "-metadata", "creation_time=2024-03-01T10:00:00Z",
                   "-metadata:s:v", "handler_name=SerialNo-123456")


@pytest.fixture(scope="module")
def street_masked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The street clip with a camera's metadata added (stream copy: the same frames and sound), masked
    under the defaults once, for the tests that read the result (an audit, the output's streams)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"test data folder {SHARED_DATA} (../shared/data) is not there")
    tmp = tmp_path_factory.mktemp("street")
    tagged = tmp / "tagged.mp4"
    ffmpeg("-i", str(SHARED_DATA / "video" / STREET), "-c", "copy", *CAMERA_METADATA, str(tagged))
    return tagged, run_redact(tagged, tmp / "work")


@pytest.mark.slow
@pytest.mark.parametrize("clip", [STREET, "talking-head-d0.mp4"])
def test_no_face_is_left_for_an_independent_audit(shared_data, tmp_path, clip, request):
    if clip == STREET:
        source, result = request.getfixturevalue("street_masked")
    else:
        source = shared_data / "video" / clip
        result = run_redact(source, tmp_path / "work")
    assert [x for x in _leaks(source, tmp_path, frames=10) if _not_the_crest(x)], \
        "the audit must see faces in the input"
    leaks = [x for x in _leaks(result["files"]["redacted.mp4"], tmp_path) if _not_the_crest(x)]
    assert leaks == []
    # The step's own leak check (the other family, CenterFace) agrees, on a frame at least every 0.2 s,
    # and does not take the masks it looks at (face-shaped ellipses) for faces.
    check = result["facts"]["leak_check"]
    frames = result["facts"]["frames"]
    assert check["detector"] == "centerface" and check["passed"] and check["faces_found"] == 0
    assert check["frames_checked"] >= frames / 25 / 0.2 - 1


@pytest.mark.slow
def test_gap_filling_covers_frames_the_detector_missed(shared_data, tmp_path, monkeypatch):
    """Six frames in a row get no detections at all; tracking must cover them from both sides."""
    seen = {"n": 0}
    real = detect.Detector.__call__
    counting = threading.Lock()   # frames are detected on several threads

    def blind_for_six_frames(self, image):
        with counting:
            seen["n"] += 1
            call = seen["n"] - 1
        return [] if 40 <= call < 46 else real(self, image)

    monkeypatch.setattr(detect.Detector, "__call__", blind_for_six_frames)
    # The clip's first 2.4 s (60 of its 105 frames; stream copy): the blind stretch, with tracks on both sides.
    clip = tmp_path / "street-60.mp4"
    ffmpeg("-i", str(shared_data / "video" / STREET), "-c", "copy", "-t", "2.4", str(clip))
    result = run_redact(clip, tmp_path / "work")
    leaks = [x for x in _leaks(result["files"]["redacted.mp4"], tmp_path) if _not_the_crest(x)]
    assert [x for x in leaks if 38 <= x["frame"] <= 48] == []
    assert leaks == []


@pytest.mark.slow
def test_output_keeps_frames_timestamps_audio_and_drops_metadata(street_masked):
    tagged, result = street_masked
    out = result["files"]["redacted.mp4"]
    assert frame_times(out) == frame_times(tagged)
    assert audio_packets(out) == audio_packets(tagged) and audio_packets(out)
    assert result["facts"]["audio"] == "copied"
    report = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(out)],
                            capture_output=True, text=True, check=True).stdout
    for secret in ("55.7558", "SpyPhone", "X-77", "2024-03-01", "SerialNo"):
        assert secret not in report
    streams = json.loads(report)["streams"]
    video_stream = next(s for s in streams if s["codec_type"] == "video")
    assert (video_stream["codec_name"], video_stream["width"], video_stream["height"]) == ("h264", 1920, 1080)
    original = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(tagged)],
                                         capture_output=True, text=True, check=True).stdout)
    assert abs(float(json.loads(report)["format"]["duration"]) - float(original["format"]["duration"])) < 0.05
    body = json.loads(Path(result["files"]["redaction-report.json"]).read_text())
    assert body["frames"] == 105 and body["tracks_detail"] and "review" in body


def test_rotated_and_variable_frame_rate_inputs(shared_data, tmp_path):
    rotated, landscape = tmp_path / "rotated.mp4", tmp_path / "landscape.mp4"
    ffmpeg("-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-vf", "crop=512:384:0:64",
           "-c:v", "libx264", str(landscape))
    # A phone held upright: landscape pixels with a display matrix that turns them a quarter.
    ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    result = run_redact(rotated, tmp_path / "rot")
    out = result["files"]["redacted.mp4"]
    upright = decoded(rotated, tmp_path)  # ffmpeg applies the display rotation when decoding
    masked = decoded(out, tmp_path)
    assert len(masked) == len(upright) and masked[0].shape == upright[0].shape == (512, 384, 3)
    assert result["facts"]["frames_with_masks"] == len(upright)
    unmasked = np.all(np.abs(masked[0].astype(np.int16) - FILL) > 14, axis=2)
    difference = np.abs(masked[0].astype(np.int16) - upright[0].astype(np.int16)).mean(axis=2)
    assert difference[unmasked].mean() < 6  # the picture outside the mask is the same picture, upright

    vfr = tmp_path / "vfr.mp4"
    ffmpeg("-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-vf",
           "setpts='if(lt(N,30),N/25,1.2+(N-30)/10)/TB'", "-fps_mode", "passthrough", "-c:v", "libx264",
           "-an", str(vfr))
    result = run_redact(vfr, tmp_path / "vfr")
    assert frame_times(result["files"]["redacted.mp4"]) == frame_times(vfr)
    assert len(set(np.round(np.diff([float(t) for t in frame_times(vfr)]), 3))) > 1


def test_audio_only_recording_is_skipped_with_a_note(tmp_path):
    sound = tmp_path / "interview.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", "-c:a", "aac", str(sound))
    result = run_redact(sound, tmp_path / "work")
    assert result["files"] == {} and "no video stream" in result["facts"]["skipped"]


@pytest.mark.slow
def test_corrupt_frames_fail_the_step_instead_of_leaking(shared_data, tmp_path):
    clip = tmp_path / "long.mp4"
    ffmpeg("-stream_loop", "3", "-i", str(shared_data / "video" / "street-walkers-1080p.mp4"), "-vf",
           "scale=640:360", "-c:v", "libx264", "-g", "250", "-an", str(clip))
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 6000] = bytes(6000)  # zeros over the middle of the picture data
    clip.write_bytes(bytes(data))
    with pytest.raises(RejectedInput, match="decoding error"):
        run_redact(clip, tmp_path / "work")
    # Frames before the damage were masked and encoded as they came: none of them is kept.
    assert [p.name for p in (tmp_path / "work").iterdir() if p.suffix == ".mp4"] == []


@pytest.mark.slow
def test_one_decoding_masks_every_frame_as_two_decodings_do(shared_data, tmp_path, monkeypatch):
    """Frames are masked a few frames behind their detection; with every track known first (two decodings,
    as for the staff policy or frames too big to hold), the same frames get the same masks."""
    clip = tmp_path / "street.mp4"
    ffmpeg("-i", str(shared_data / "video" / STREET), "-vf", "scale=960:540", "-c:v", "libx264", "-crf", "16",
           "-an", str(clip))
    runs = {}
    for decodings, waiting_bytes in ((1, redact._MOST_WAITING_BYTES), (2, 0)):
        monkeypatch.setattr(redact, "_MOST_WAITING_BYTES", waiting_bytes)
        result = run_redact(clip, tmp_path / str(decodings))
        body = json.loads(Path(result["files"]["redaction-report.json"]).read_text())
        assert body["speed"]["decodings"] == decodings
        frames = subprocess.run(["ffmpeg", "-v", "error", "-i", str(result["files"]["redacted.mp4"]), "-map", "0:v",
                                 "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
        runs[decodings] = (body["tracks_detail"], body["frames_with_masks"], body["leak_check"]["frames_checked"],
                           [line for line in frames.splitlines() if not line.startswith("#")])
    assert len(runs[1][3]) == 105 and runs[1][0] and runs[1][1] > 90
    assert runs[1] == runs[2]


def test_redact_command_writes_the_video_and_report(shared_data, tmp_path, cli):
    out = tmp_path / "out" / "clip.mp4"
    report = cli.json("redact", str(shared_data / "video" / "talking-head-d0.mp4"), "--out", str(out),
                      "--set", "style=noise", timeout=300)
    assert out.is_file() and Path(report["report"]).is_file()
    assert report["frames"] == len(frame_times(out)) and report["tracks_masked"] >= 1
    again = cli("redact", str(shared_data / "video" / "talking-head-d0.mp4"), "--out", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = cli("redact", str(shared_data / "video" / "talking-head-d0.mp4"), "--out", str(tmp_path / "x.mp4"),
              "--set", "style=blur", check=False)
    assert bad.returncode == 2 and "fill, noise" in bad.stderr
    configured = cli("redact", str(shared_data / "video" / "talking-head-d0.mp4"), "--out", str(tmp_path / "y.mp4"),
                     check=False, EVIDENCE_REDACT__STYLE="blur")   # the [redact] settings are checked too
    assert configured.returncode == 2 and "fill, noise" in configured.stderr
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "y.mp4").exists()


def test_small_face_mode_and_ensemble_leave_no_face(shared_data, tmp_path):
    source = shared_data / "video" / "talking-head-d0.mp4"
    result = run_redact(source, tmp_path / "work", tiles=2, detector="ensemble")
    assert result["facts"]["detector"] == "ensemble" and result["facts"]["tracks_masked"] >= 1
    assert _leaks(result["files"]["redacted.mp4"], tmp_path) == []


def test_odd_sized_picture_keeps_its_size_and_a_disguised_voice_keeps_its_length(tmp_path):
    clip = tmp_path / "odd.mkv"
    # lavfi rounds test pictures to even sides: the odd size comes from the scaler.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=220:duration=2", "-vf", "scale=321:241", "-c:v", "libx264", "-pix_fmt", "yuv444p",
           "-c:a", "flac", str(clip))
    result = run_redact(clip, tmp_path / "work", voice="disguise")
    out = result["files"]["redacted.mp4"]
    assert result["facts"]["audio"].startswith("disguised")
    shown = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                                       str(out)], capture_output=True, text=True, check=True).stdout)
    video_stream = next(s for s in shown["streams"] if s["codec_type"] == "video")
    assert (video_stream["width"], video_stream["height"]) == (321, 241)
    assert frame_times(out) == frame_times(clip)
    assert audio_packets(out) != audio_packets(clip)
    assert abs(float(shown["format"]["duration"]) - 2.0) < 0.1


def test_cover_art_before_the_video_is_not_taken_for_the_video(shared_data, tmp_path):
    cover, clip = tmp_path / "cover.png", tmp_path / "with-cover.mp4"
    cv2.imwrite(str(cover), np.full((256, 256, 3), 90, dtype=np.uint8))
    ffmpeg("-i", str(cover), "-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-map", "0", "-map", "1",
           "-c", "copy", "-disposition:0", "attached_pic", str(clip))
    result = run_redact(clip, tmp_path / "work")
    assert result["facts"]["frames"] == len(frame_times(shared_data / "video" / "talking-head-d0.mp4"))
    assert (result["facts"]["width"], result["facts"]["height"]) == (512, 512)


def test_a_video_holding_far_more_frames_than_it_declares_is_refused(shared_data, tmp_path):
    source = tmp_path / "long.mp4"
    ffmpeg("-stream_loop", "4", "-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-vf", "scale=256:256",
           "-c:v", "libx264", "-an", str(source))
    intake = pipelines.get("intake")
    params = intake.resolve_params({})
    facts, _, _ = probe_file(source, intake.step_params(intake.steps[0], params))
    lying = {**facts, "duration_s": 0.04}   # what a container with a forged duration declares
    step = next(s for s in intake.steps if s.name == "redact")
    (tmp_path / "work").mkdir()
    context = StepContext(evidence_id="", original=source, workdir=tmp_path / "work", facts={"probe": lying},
                          params=intake.step_params(step, params), models=Registry())
    assert len(frame_times(source)) > 1.5 * 25 * 0.04 + 250   # more than the step's margin allows
    with pytest.raises(RejectedInput, match="more than .* frames"):
        step.run(context)


@pytest.mark.parametrize("squeeze, sar", [("scale=128:512", "4:1"), ("scale=512:128", "1:4")])
def test_anamorphic_video_is_masked_in_the_picture_people_see_and_keeps_its_shape(shared_data, tmp_path,
                                                                                   squeeze, sar):
    """Pixels four times as wide (or high) as they are stored: faces squeezed in the stored picture."""
    source = tmp_path / "anamorphic.mp4"
    ffmpeg("-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-vf", f"{squeeze},setsar={sar.replace(':', '/')}",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-an", str(source))
    seen = audit.leaks(source, YUNET, DEFAULT_TOOLS, tmp_path, display=(512, 512))
    assert len({x["frame"] for x in seen}) > 50, "the picture people see shows the face"
    result = run_redact(source, tmp_path / "work")
    out = result["files"]["redacted.mp4"]
    shown = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height,sample_aspect_ratio", "-of", "json", str(out)],
                           capture_output=True, text=True, check=True).stdout
    stream = json.loads(shown)["streams"][0]
    assert (stream["width"], stream["height"], stream["sample_aspect_ratio"]) == (
        *(int(n) for n in squeeze.removeprefix("scale=").split(":")), sar)
    assert audit.leaks(out, YUNET, DEFAULT_TOOLS, tmp_path, display=(512, 512)) == []
