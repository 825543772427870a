"""The bundled demo model (faceedittalker/assets/demo_model) loads and generates, so it never goes stale when a
model format changes. Regenerate it with `python scripts/make_demo_model.py` (see the README)."""

from __future__ import annotations

import json

import av
import numpy as np
from media_fixtures import ASTRONAUT_PATH
from scipy.ndimage import binary_dilation

from faceedittalker import DEMO_MODEL
from faceedittalker.landmarks.regions import ATTRIBUTE_REGIONS, region_box
from faceedittalker.pipeline import FaceEditTalkerPipeline


def test_demo_model_is_small_and_complete():
    files = [p for p in DEMO_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20  # < 20 MB, as committed
    assert all(p.suffix in (".json", ".safetensors", ".txt", ".md") for p in files), [p.name for p in files]
    manifest = json.loads((DEMO_MODEL / "model_index.json").read_text())
    assert "format_version" in manifest


def test_demo_model_generates_an_edited_talking_video(short_speech, tmp_path):
    pipe = FaceEditTalkerPipeline.from_pretrained(DEMO_MODEL)
    # The 32 px video model's faces come out at 128 px through its face upsampler (goal 5 of issue 10).
    assert (pipe.video_model.resolution, pipe.resolution) == (32, 128)
    assert "Eyeglasses" in pipe.attribute_names
    output = tmp_path / "demo.mp4"
    result = pipe(ASTRONAUT_PATH, short_speech, edit="Eyeglasses", alpha=0.8, output=output, progress=False)
    assert result.num_frames == 18  # ceil(0.7 s x 25)
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264" and container.streams.audio[0].codec_context.name == "aac"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(frames) == 18 and frames[0].shape == (512, 512, 3)  # pasted back into the 512 px astronaut
    # The edit moved the semantic code by the library's direction, on every frame.
    moved = (result.edited_z_sem - result.z_sem[:, None]).norm(dim=-1)
    assert float(moved.min()) > 0
    assert np.isfinite(np.stack(frames).astype(np.float32)).all()


def test_demo_model_edits_glasses_inside_the_eye_region_of_every_frame(short_speech):
    pipe = FaceEditTalkerPipeline.from_pretrained(DEMO_MODEL)
    manifest = json.loads((DEMO_MODEL / "model_index.json").read_text())
    # The edit defaults its README figures were measured with (README, "Edit guidance and edit regions").
    assert (manifest["edit_guidance"], manifest["edit_region"]) == (pipe.edit_guidance, pipe.edit_region) == (1.0, True)
    assert manifest["edit_reference"] is pipe.edit_reference is True  # the video starts from the edited still
    plain = pipe(ASTRONAUT_PATH, short_speech, paste_back=False, progress=False)
    edited = pipe(ASTRONAUT_PATH, short_speech, edit="Eyeglasses", alpha=1.0, paste_back=False, progress=False)
    np.testing.assert_array_equal(edited.landmarks, plain.landmarks)  # the edit does not touch the motion
    size, scale = pipe.resolution, pipe.resolution // pipe.video_model.resolution
    change = np.abs(edited.frames.astype(float) - plain.frames).mean(-1)  # (T, size, size)
    for frame, landmarks in zip(change, edited.landmarks, strict=True):
        inside = region_box(landmarks, ATTRIBUTE_REGIONS["Eyeglasses"], size)
        far = ~binary_dilation(inside, iterations=3 * scale)  # 3 px of the video model's frames
        assert frame[inside].mean() > 4 * frame[far].mean()
