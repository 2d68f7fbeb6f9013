"""The staff policy on real media: enrolment (what it refuses), masking enrolled staff only, tracks that end
at shot cuts and split where a face becomes someone else's."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import ffmpeg
from test_redact import decoded, frame_times, masked_share, run_redact

from worker.processing.staff import Roster


def _enrol_the_talking_head(shared_data: Path, tmp: Path, cli) -> dict:
    """The talking head enrolled as "field lawyer" from every 15th frame of its clip; the command's answer."""
    frames = tmp / "enrol"
    frames.mkdir()
    ffmpeg("-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-vf", "select='not(mod(n,15))'",
           "-fps_mode", "passthrough", str(frames / "face-%02d.png"))
    return cli.json("staff", "enroll", "field lawyer", *sorted(frames.glob("*.png")))


def _side_by_side(shared_data: Path, tmp: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """The talking head (left) next to a stranger's still face from the labelled photos (right)."""
    photo = cv2.imread(str(shared_data / "faces" / "2008_001322.jpg"))
    x, y, w, h = 104, 162, 76, 76   # a labelled face (dlib distance to the talking head here: about 0.8)
    margin = 40
    crop = photo[max(y - margin, 0):y + h + margin, max(x - margin, 0):x + w + margin]
    stranger = tmp / "stranger.png"
    cv2.imwrite(str(stranger), cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC))
    out = tmp / "pair.mp4"
    ffmpeg("-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-loop", "1", "-i", str(stranger),
           "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]", "-map", "[v]", "-t", "3", "-c:v", "libx264",
           "-crf", "12", "-pix_fmt", "yuv420p", str(out))
    scale = 512 / crop.shape[1]
    face = (512 + int((x - max(x - margin, 0)) * scale), int((y - max(y - margin, 0)) * scale), int(w * scale),
            int(h * scale))
    return out, face


@pytest.mark.slow
def test_staff_policy_masks_the_enrolled_face_only(shared_data, tmp_path, cli):
    enrolled = _enrol_the_talking_head(shared_data, tmp_path, cli)
    assert enrolled["added"] >= 3
    assert cli.json("staff", "list")["staff"] == {"field lawyer": enrolled["faces"]}
    roster = cli.home / "staff" / "roster.json"
    assert roster.stat().st_mode & 0o077 == 0 and b"png" not in roster.read_bytes()

    pair, (fx, fy, fw, fh) = _side_by_side(shared_data, tmp_path)
    result = run_redact(pair, tmp_path / "work", staff=Roster(cli.home).embeddings(), policy="staff")
    assert result["facts"]["staff"]["tracks_matched_staff"] >= 1
    original, masked = decoded(pair, tmp_path), decoded(result["files"]["redacted.mp4"], tmp_path)
    assert len(original) == len(masked)
    for before, after in zip(original, masked, strict=True):
        assert masked_share(after, 150, 150, 200, 200) > 0.9           # the enrolled face, every frame
        stranger_before = before[fy:fy + fh, fx:fx + fw].astype(np.int16)
        stranger_after = after[fy:fy + fh, fx:fx + fw].astype(np.int16)
        assert np.abs(stranger_after - stranger_before).mean() < 6      # the stranger, untouched
    report = Path(result["files"]["redaction-report.json"]).read_text()
    assert "field lawyer" not in report

    # Through the worker: the step says it needs the roster, and the runner hands it over.
    [item] = cli.json("ingest", pair, "--no-enqueue")["ingested"]
    cli.json("reprocess", item["evidence_id"], "--set", "redact.policy=staff")
    cli("worker", "--once", timeout=300)
    [run] = cli.json("show", item["evidence_id"])["runs"]
    facts = json.loads((Path(run["location"]) / "run.json").read_text())["facts"]["redact"]
    assert facts["policy"] == "staff" and facts["staff"]["tracks_matched_staff"] >= 1

    cli("staff", "remove", "field lawyer")
    assert cli.json("staff", "list")["staff"] == {}


def test_enrolment_refuses_photos_without_exactly_one_face(shared_data, tmp_path, cli):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 200, dtype=np.uint8))
    for photo, words in ((blank, "0 faces"), (shared_data / "faces" / "multiface.jpg", "faces found")):
        done = cli("staff", "enroll", "someone", str(photo), check=False)
        assert done.returncode == 1 and words in done.stderr
    assert cli.json("staff", "list")["staff"] == {}


def test_enrolment_takes_only_jpeg_or_png_whatever_the_name_says(shared_data, tmp_path, cli):
    disguised = tmp_path / "face.jpg"
    ok, data = cv2.imencode(".tiff", cv2.imread(str(shared_data / "faces" / "2008_001322.jpg")))
    disguised.write_bytes(data.tobytes())
    done = cli("staff", "enroll", "someone", str(disguised), check=False)
    assert done.returncode == 1 and "not a JPEG or PNG" in done.stderr


def test_enrolment_refuses_a_photo_declaring_too_many_pixels_before_decoding_it(tmp_path, cli):
    """A 65000x65000 JPEG header or a 20000x20000 PNG is refused from its header, whatever imported OpenCV."""
    sof = b"\xff\xc0\x00\x11\x08" + (65000).to_bytes(2, "big") * 2 + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    jpeg = tmp_path / "huge.jpg"
    jpeg.write_bytes(b"\xff\xd8" + b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof + b"\xff\xd9")
    ok, small = cv2.imencode(".png", np.zeros((40, 40, 3), dtype=np.uint8))
    data = bytearray(small.tobytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2
    png = tmp_path / "huge.png"
    png.write_bytes(bytes(data))
    for photo, size in ((jpeg, "65000x65000"), (png, "20000x20000")):
        done = cli("staff", "enroll", "someone", str(photo), check=False)
        assert done.returncode == 1 and f"declares {size} pixels" in done.stderr and "Traceback" not in done.stderr
    assert cli.json("staff", "list")["staff"] == {}


@pytest.mark.slow
def test_a_staff_member_after_a_cut_in_a_strangers_place_is_masked_whatever_the_frame_rate(shared_data, tmp_path,
                                                                                         cli):
    """A stranger for 96 frames, a cut to an enrolled staff member in the same place for 24, the stranger again.
    Tracks end at the cut and faces are compared every 0.2 s of media time, at 25 fps as at 5 fps."""
    _enrol_the_talking_head(shared_data, tmp_path, cli)
    pair, _ = _side_by_side(shared_data, tmp_path)
    stranger = tmp_path / "stranger.png"   # the right half of the pair: a face where the staff face will be
    for fps in (25, 5):
        clip = tmp_path / f"cut-{fps}.mp4"
        ffmpeg("-loop", "1", "-t", f"{96 / 25}", "-i", str(stranger),
               "-i", str(shared_data / "video" / "talking-head-d0.mp4"), "-loop", "1", "-t", "1", "-i", str(stranger),
               "-filter_complex", "[0:v]fps=25,format=yuv420p[a];[1:v]trim=end_frame=24,setpts=PTS-STARTPTS,"
               "fps=25,format=yuv420p[b];[2:v]fps=25,format=yuv420p[c];[a][b][c]concat=n=3:v=1:a=0,"
               f"fps={fps}[v]", "-map", "[v]", "-c:v", "libx264", "-crf", "12", str(clip))
        result = run_redact(clip, tmp_path / f"work-{fps}", staff=Roster(cli.home).embeddings(), policy="staff")
        assert result["facts"]["shot_cuts"] >= 2
        frames = decoded(result["files"]["redacted.mp4"], tmp_path)
        times = [float(t) for t in frame_times(result["files"]["redacted.mp4"])]
        staff_frames = [f for f, t in zip(frames, times, strict=True) if 96 / 25 + 0.01 < t < 120 / 25 - 0.01]
        assert staff_frames and all(masked_share(f, 150, 150, 200, 200) > 0.9 for f in staff_frames), fps
        strangers = [f for f, t in zip(frames, times, strict=True) if t < 2.0]   # before the staff track's pad
        shown = sum(masked_share(f, 150, 150, 200, 200) < 0.1 for f in strangers)
        assert shown >= 0.8 * len(strangers), "the stranger stays visible where compared"
        review = json.loads(Path(result["files"]["redaction-report.json"]).read_text())["review"]
        assert any("matched no one" in reason for moment in review for reason in moment["reasons"])


@pytest.mark.slow
def test_a_track_whose_face_becomes_someone_elses_is_split_and_masked_across_the_change(shared_data, tmp_path, cli):
    """One stranger, then another in the same place without a cut (only the face changes, so the shot goes on
    and so does the track): the stretch across the change is masked, each stranger's own stretches are not."""
    _enrol_the_talking_head(shared_data, tmp_path, cli)
    crops = []
    for name, (x, y, w, h) in (("2008_001322.jpg", (104, 162, 76, 76)), ("2008_002506.jpg", (329, 78, 109, 109))):
        photo = cv2.imread(str(shared_data / "faces" / name))
        crop = photo[y - 40:y + h + 40, x - 40:x + w + 40]
        crops.append(tmp_path / name.replace(".jpg", ".png"))
        cv2.imwrite(str(crops[-1]), cv2.resize(crop, (180, 180), interpolation=cv2.INTER_CUBIC))
    clip = tmp_path / "change.mp4"
    change_s = 1.92   # frame 48: between the comparisons at 1.8 and 2.0 s
    ffmpeg("-f", "lavfi", "-i", "color=c=0x5a6e7d:s=640x480:r=25:d=4", "-loop", "1", "-i", str(crops[0]),
           "-loop", "1", "-i", str(crops[1]), "-filter_complex",
           f"[0:v]noise=alls=12:allf=t[bg];[bg][1:v]overlay=230:150:enable='lt(t,{change_s})'[a];"
           f"[a][2:v]overlay=230:150:enable='gte(t,{change_s})',format=yuv420p[v]", "-map", "[v]", "-t", "4",
           "-c:v", "libx264", "-crf", "12", str(clip))
    result = run_redact(clip, tmp_path / "work", staff=Roster(cli.home).embeddings(), policy="staff")
    assert result["facts"]["shot_cuts"] == 0 and result["facts"]["staff"]["changes_of_person"] >= 1
    frames = decoded(result["files"]["redacted.mp4"], tmp_path)
    face = (230 + 50, 150 + 50, 80, 80)
    masked = [masked_share(f, *face) > 0.9 for f in frames]
    assert all(masked[46:50]), "the frames where one face became another were not compared: masked"
    assert sum(masked[5:40]) <= 3 and sum(masked[60:95]) <= 3, "each stranger stays visible where compared"
    review = json.loads(Path(result["files"]["redaction-report.json"]).read_text())["review"]
    assert any("became someone else" in reason and moment["start_s"] <= change_s <= moment["end_s"]
               for moment in review for reason in moment["reasons"])
