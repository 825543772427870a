"""Preprocessing real face pixels: the talking astronaut video -> a clip folder; rejects; resume; CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import soundfile
from media_fixtures import faceless_video, talking_video, write_video
from PIL import Image

from faceedittalker import REPO_ROOT
from faceedittalker.data.clips import ClipWindowDataset, list_clips, read_clip
from faceedittalker.data.preprocess import Preprocessor, PreprocessSettings, iter_frames_at_fps, plan_clips
from faceedittalker.errors import exit_on_input_error
from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.pose import apply_pose, normalise_pose
from faceedittalker.utils.files import TMP_PREFIX


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    """HDTF/VoxCeleb2-like input: a talking face in a speaker folder, a faceless video, a mute video."""
    raw = tmp_path_factory.mktemp("raw")
    (raw / "speaker1").mkdir()
    talking_video(raw / "speaker1" / "talk.mp4", seconds=3.0)
    faceless_video(raw / "noface.mp4")
    faceless_video(raw / "mute.mov", with_audio=False)
    return raw


@pytest.fixture(scope="module")
def first_run(raw_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("clips")
    summary = Preprocessor(raw_dir, output).run(progress=False)
    return output, summary


def test_talking_video_becomes_a_valid_clip_folder(first_run):
    output, summary = first_run
    assert summary["kept"] == ["speaker1__talk_000"]
    clip = read_clip(output / "speaker1__talk_000")
    # 3 s of 30 fps video -> 75 frames at 25 fps, 512 x 512; 16 kHz audio of exactly that length.
    assert clip.frames.shape == (75, 512, 512, 3) and clip.frames.dtype == np.uint8
    with av.open(str(output / "speaker1__talk_000" / "frames.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25 and stream.codec_context.name == "h264"
    info = soundfile.info(output / "speaker1__talk_000" / "audio.wav")
    assert info.samplerate == 16000 and info.channels == 1 and info.frames == 75 * 640
    assert np.sqrt(np.mean(clip.audio**2)) > 0.02  # the speech, not silence
    assert clip.landmarks.shape == (75, 478, 3) and clip.landmarks.dtype == np.float32
    meta = clip.meta
    assert meta["fps"] == 25 and meta["size"] == [512, 512] and meta["num_frames"] == 75
    assert meta["source"] == "speaker1/talk.mp4" and meta["source_size"] == [640, 512]
    assert meta["detection_rate"] == 1.0 and len(meta["crop_boxes"]) == 75
    # The face fills the crop: landmark box about half the frame, centred.
    xy = clip.landmarks[..., :2]
    extent = xy.max(axis=1) - xy.min(axis=1)
    assert np.all((extent > 0.35) & (extent < 0.75))
    assert np.all(np.abs(xy.mean(axis=1) - 0.5) < 0.15)


def test_stored_landmarks_match_a_fresh_detection_on_the_crops(first_run):
    output, _ = first_run
    clip = read_clip(output / "speaker1__talk_000")
    with FaceLandmarker() as landmarker:
        for t in (0, 37, 74):
            face = landmarker.detect(clip.frames[t])
            assert face is not None
            assert np.abs(face.points[:, :2] - clip.landmarks[t, :, :2]).mean() < 0.005


def test_mouth_in_landmarks_follows_the_speech(first_run):
    output, _ = first_run
    clip = read_clip(output / "speaker1__talk_000")
    opening = np.linalg.norm(clip.landmarks[:, 14, :2] - clip.landmarks[:, 13, :2], axis=1)
    loudness = np.sqrt((clip.audio.reshape(75, 640) ** 2).mean(axis=1))
    assert np.corrcoef(opening, loudness)[0, 1] > 0.6


def test_poses_round_trip_and_crop_boxes_are_smooth(first_run):
    output, _ = first_run
    folder = output / "speaker1__talk_000"
    landmarks, poses = np.load(folder / "landmarks.npy"), np.load(folder / "poses.npy")
    assert poses.shape == (75, 4, 4)
    canonical = normalise_pose(landmarks, poses, 512)
    assert np.abs(apply_pose(canonical, poses, 512) - landmarks).max() < 1e-4
    boxes = np.array(json.loads((folder / "meta.json").read_text())["crop_boxes"])
    # The head sways by a few pixels a frame; the smoothed box moves less than a pixel a frame on average.
    assert np.abs(np.diff(boxes, axis=0)).mean() < 1.0


def test_report_names_each_rejected_video_and_why(first_run):
    output, summary = first_run
    report = json.loads((output / "report.json").read_text())
    assert report == summary
    reasons = {entry["source"]: entry["reason"] for entry in report["rejected"]}
    assert reasons["noface.mp4"].startswith("face missing in 100% of frames")
    assert reasons["mute.mov"] == "no audio stream"
    assert report["clips_kept"] == 1 and report["clips_rejected"] == 2
    assert [p.name for p in list_clips(output)] == ["speaker1__talk_000"]
    assert not [p for p in output.iterdir() if p.name.startswith(TMP_PREFIX)]  # no temporary clip folder left


def test_second_run_skips_what_is_done(raw_dir, first_run):
    output, first = first_run
    frames = output / "speaker1__talk_000" / "frames.mp4"
    stamp = frames.stat().st_mtime_ns
    again = Preprocessor(raw_dir, output).run(progress=False)
    assert again["videos_skipped"] == 3
    assert again["kept"] == first["kept"] and again["rejected"] == first["rejected"]
    assert frames.stat().st_mtime_ns == stamp


def test_window_dataset_reads_16_frame_windows(first_run):
    output, _ = first_run
    dataset = ClipWindowDataset(output, num_frames=16, frame_strides=2, window_step=8)
    item = dataset[0]
    assert len(dataset) == len(range(0, 75 - 31 + 1, 8))
    assert item["frames"].shape == (16, 3, 512, 512) and item["landmarks"].shape == (16, 478, 3)
    assert item["audio"].shape == (31 * 640,) and -1 <= item["frames"].min() <= item["frames"].max() <= 1


def test_frames_are_resampled_by_display_time(tmp_path):
    # 30 fps source whose frame i has grey level 8 i: tick k (k / 25 s) shows source frame floor(k * 30 / 25).
    levels = np.arange(30) * 8
    frames = np.repeat(levels.astype(np.uint8)[:, None, None, None], 32, axis=1).repeat(32, axis=2).repeat(3, axis=3)
    path = write_video(tmp_path / "ramp.mp4", frames, fps=30, crf=0)
    resampled = list(iter_frames_at_fps(path, 25))
    assert len(resampled) == 25
    shown = [int(round(frame.mean() / 8)) for frame in resampled]
    assert shown == [k * 30 // 25 for k in range(25)]


def test_plan_clips_splits_long_videos_cuts_shots_and_judges():
    settings = PreprocessSettings(clip_seconds=10, min_clip_seconds=2, min_face_size=64)
    total = 25 * 25  # 25 s
    found = np.ones(total, bool)
    boxes = np.tile([100.0, 100.0, 300.0, 320.0], (total, 1))
    boxes[400:] += 500  # a shot change at 16 s: the face jumps
    found[450:470] = False  # 0.8 s without a face
    plans = plan_clips(found, boxes, "video", settings)
    spans = [(p.start, p.stop) for p in plans]
    assert spans == [(0, 200), (200, 400), (400, 625)]
    assert all(p.reason is None for p in plans[:2])
    assert plans[2].detection_rate == pytest.approx(1 - 20 / 225)
    assert plans[2].reason is None and plans[2].boxes.shape == (225, 3)
    small = plan_clips(np.ones(100, bool), np.tile([0.0, 0.0, 30.0, 40.0], (100, 1)), "v", settings)
    assert small[0].reason.startswith("face too small")
    short = plan_clips(np.ones(30, bool), np.tile([0.0, 0.0, 300.0, 300.0], (30, 1)), "v", settings)
    assert short[0].reason.startswith("too short")


def _cli(*args, cwd):
    command = [sys.executable, str(REPO_ROOT / "scripts/preprocess.py"), *args, "progress=false"]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_cli_reports_and_leaves_no_hydra_files(raw_dir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    noface_only = tmp_path / "raw"
    noface_only.mkdir()
    (noface_only / "noface.mp4").write_bytes((raw_dir / "noface.mp4").read_bytes())
    result = _cli(f"input={noface_only}", f"output={tmp_path / 'out'}", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "0 clips kept, 1 rejected (1 face missing in 100% of frames)" in result.stdout
    assert list(work.iterdir()) == []  # no outputs/ or .hydra in the working directory
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".done", "report.json"]


@pytest.mark.parametrize(
    ("input_kind", "message"),
    [("missing", "input folder not found"), ("empty", "no videos")],
)
def test_cli_bad_input_is_one_line_and_exit_2(input_kind, message, tmp_path):
    source = tmp_path / "raw"
    if input_kind == "empty":
        source.mkdir()
        (source / "notes.txt").write_text("no videos here")
    result = _cli(f"input={source}", f"output={tmp_path / 'out'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_frames_are_decoded_single_threaded(tmp_path, monkeypatch):
    # Callers stop reading early; a frame-threaded decoder left early can deadlock PyAV (as in data/clips.py).
    import faceedittalker.data.preprocess as preprocess

    path = write_video(tmp_path / "grey.mp4", np.zeros((10, 32, 32, 3), np.uint8), fps=25, crf=0)
    opened = []
    real_open = av.open

    def recording_open(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(preprocess.av, "open", recording_open)
    frames = iter_frames_at_fps(path, 25)
    next(frames)
    assert opened[0].streams.video[0].thread_type.name == "SLICE"  # PyAV's default; AUTO adds FRAME
    frames.close()


def test_a_video_shorter_on_the_second_decode_is_rejected_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    # Pass 1 counted 75 frames, pass 2 yields 40: the video is reported as rejected (no RuntimeError from a
    # StopIteration, no assert), no clip or .partial_ folder stays, and pass 2's decoder is closed.
    import faceedittalker.data.preprocess as preprocess

    raw = tmp_path / "raw"
    raw.mkdir()
    faceless_video(raw / "talk.mp4")  # only probed: tracking, audio and decoding are replaced below
    total = 75
    tracked = (np.ones(total, bool), np.tile([100.0, 100.0, 300.0, 320.0], (total, 1)),
               np.zeros((total, 478, 3), np.float32), (640, 512))
    monkeypatch.setattr(Preprocessor, "_track", lambda self, video, progress: tracked)
    monkeypatch.setattr(preprocess, "load_audio", lambda video, rate: np.full(total * 640, 0.3, np.float32))
    closed = []

    def short_decode(path, fps):
        try:
            yield from (np.zeros((512, 640, 3), np.uint8) for _ in range(40))
        finally:
            closed.append(True)

    monkeypatch.setattr(preprocess, "iter_frames_at_fps", short_decode)
    output = tmp_path / "clips"
    summary = Preprocessor(raw, output, PreprocessSettings(size=32)).run(progress=False)
    assert summary["kept"] == [] and len(summary["rejected"]) == 1
    assert summary["rejected"][0]["reason"] == "decoding failed: the second decode ended after 40 of 75 frames"
    assert sorted(p.name for p in output.iterdir()) == [".done", "report.json"]
    assert closed == [True]


@pytest.mark.parametrize(("meta", "message"), [
    ("{not json", "is not valid JSON"),
    ('{"fps": 25}', "'num_frames' must be a non-negative number, got None"),
    ('{"num_frames": 40, "fps": "25"}', "'fps' must be a positive number, got '25'"),
])  # fmt: skip
def test_a_malformed_meta_json_is_one_clear_error(tmp_path, capsys, meta, message):
    clip = tmp_path / "clips" / "clip_000"
    (clip / "frames").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(clip / "frames" / "00000.png")
    soundfile.write(clip / "audio.wav", np.zeros(640, np.float32), 16000)
    np.save(clip / "landmarks.npy", np.zeros((1, 478, 3), np.float32))
    (clip / "meta.json").write_text(meta)
    for read in (lambda: ClipWindowDataset(tmp_path / "clips", num_frames=1), lambda: read_clip(clip)):
        with pytest.raises(SystemExit) as exited:
            exit_on_input_error(read)()
        lines = capsys.readouterr().err.strip().splitlines()
        assert exited.value.code == 2 and len(lines) == 1
        assert lines[0].startswith(f"error: {clip / 'meta.json'}") and message in lines[0]
