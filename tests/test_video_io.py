"""The output video of Alg. 4: streamed H.264 + AAC mp4, atomic, read back with PyAV."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from media_fixtures import astronaut, speech_path

from faceedittalker.data.audio import load_audio, num_video_frames
from faceedittalker.data.video import VideoWriter, read_video
from faceedittalker.errors import InputError


def frames_of(count: int, height: int, width: int) -> list[np.ndarray]:
    """The astronaut at (height, width), its levels in [0, 204] brightened by 0..49 in a saw-tooth over frames, so
    that frames differ and nothing clips."""
    base = 0.8 * cv2.resize(astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return [np.round(base + i % 50).astype(np.uint8) for i in range(count)]


def soft(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.5)


@pytest.fixture(scope="module")
def speech():
    return load_audio(speech_path("en_female"))


def test_round_trip_h264_aac_25fps_with_the_whole_soundtrack(tmp_path, speech):
    num_frames = num_video_frames(len(speech))  # ceil(duration x 25)
    path = tmp_path / "talk.mp4"
    frames = frames_of(num_frames, 96, 128)
    with VideoWriter(path, fps=25, audio=speech, sample_rate=16000, crf=12) as writer:
        for frame in frames:
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]  # no temporary file left
    read, fps, audio, rate = read_video(path)
    assert read.shape == (num_frames, 96, 128, 3) and read.dtype == np.uint8
    assert fps == 25.0 and rate == 16000
    assert abs(len(audio) - len(speech)) / 16000 < 0.040
    # The soundtrack is the input speech (AAC is lossy: compare loudness envelopes, 40 ms windows).
    envelope = lambda w: np.sqrt(np.convolve(w[: len(speech)] ** 2, np.ones(640) / 640, mode="valid"))[::320]
    assert np.corrcoef(envelope(audio), envelope(speech))[0, 1] > 0.95
    # Colours come back (BT.709 in and out: no colour cast) and the frames keep their order; at this small size
    # yuv420p's half-resolution chroma costs some detail, so the pictures are compared slightly blurred.
    for ours, theirs in zip(read, frames, strict=True):
        assert np.abs((ours.astype(int) - theirs).reshape(-1, 3).mean(axis=0)).max() < 1.5
        assert np.abs(soft(ours) - soft(theirs)).mean() < 2.0
    brightness = lambda video: [frame.mean() for frame in video]
    assert np.corrcoef(brightness(read), brightness(frames))[0, 1] > 0.999
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert video.codec_context.colorspace == 1  # tagged BT.709, as converted
        assert sound.codec_context.name == "aac" and sound.codec_context.sample_rate == 16000
        assert abs(float(sound.duration * sound.time_base) - len(speech) / 16000) < 0.040
        assert abs(float(video.duration * video.time_base) - num_frames / 25) < 0.040


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    frames = frames_of(5, 101, 131)
    with VideoWriter(path) as writer:
        for frame in frames:
            writer.write(frame)
    read, fps, audio, rate = read_video(path)
    assert read.shape == (5, 102, 132, 3) and audio is None and rate is None
    # The picture is intact; the added row and column repeat the last ones.
    assert np.abs(soft(read[0, :101, :131]) - soft(frames[0])).mean() < 2.0
    assert np.abs(read[0, 101].astype(int) - read[0, 100]).mean() < 4.0


def test_a_failure_inside_the_with_block_leaves_nothing(tmp_path, speech):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model exploded"):
        with VideoWriter(path, audio=speech) as writer:
            for frame in frames_of(3, 64, 64):
                writer.write(frame)
            raise RuntimeError("model exploded")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rewrite_keeps_the_previous_video(tmp_path):
    path = tmp_path / "out.mp4"
    with VideoWriter(path) as writer:
        writer.write(frames_of(1, 64, 64)[0])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="frame 1 is"):
        with VideoWriter(path) as writer:
            writer.write(frames_of(1, 64, 64)[0])
            writer.write(frames_of(1, 64, 80)[0])  # a different size mid-video
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_frames_are_streamed_not_kept(tmp_path):
    # 200 frames of 256 x 256 would be 39 MB held in memory; the writer keeps none of them.
    path = tmp_path / "long.mp4"
    with VideoWriter(path, preset="ultrafast") as writer:
        frame = frames_of(1, 256, 256)[0]
        for _ in range(200):
            writer.write(frame)
        held = [v for v in vars(writer).values() if isinstance(v, (list, np.ndarray)) and v is not writer.audio]
        assert held == []
    assert writer.num_frames == 200 and len(read_video(path)[0]) == 200


def test_bad_paths_and_inputs(tmp_path):
    with pytest.raises(InputError, match="output folder not found"):
        VideoWriter(tmp_path / "missing" / "out.mp4")
    with pytest.raises(InputError, match="must end in"):
        VideoWriter(tmp_path / "out.gif")
    with pytest.raises(InputError, match="video not found"):
        read_video(tmp_path / "nothing.mp4")
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(InputError, match="cannot read video"):
        read_video(tmp_path / "fake.mp4")
    with pytest.raises(ValueError, match="no frames written"):
        with VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.mp4"]
