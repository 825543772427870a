"""Stage settings that must hold before any training: the E_img override, sample windows, edit-preview names."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_train_config, tiny_overrides

from faceedittalker.errors import InputError
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages import STAGES, Stage2, VideoStage


class _Loaded(Exception):
    """Stops a stage right after it asked for the stage-1 model."""


@pytest.mark.parametrize("stage", [2, 3])
def test_autoencoder_pretrained_overrides_the_vae_path_of_the_stage1_export(tmp_path, monkeypatch, stage):
    # Before: stages 2 and 3 loaded E_img from the path stored in the export, whatever autoencoder.pretrained said.
    asked = {}

    def from_pretrained(directory, autoencoder_path=None, device="cpu"):
        asked.update(directory=str(directory), autoencoder_path=autoencoder_path)
        raise _Loaded

    monkeypatch.setattr(ImageFeatureSpace, "from_pretrained", staticmethod(from_pretrained))
    key = "stage2" if stage == 2 else "stage3"
    cfg = compose_train_config([f"stage={stage}", f"{key}.feature_space={tmp_path}/export", "autoencoder=sd_vae",
                                f"autoencoder.pretrained={tmp_path}/vae"])
    with pytest.raises(_Loaded):
        STAGES[stage](cfg).build_dataset()
    assert asked == {"directory": f"{tmp_path}/export", "autoencoder_path": f"{tmp_path}/vae"}
    # Pixel space (identity E_img) has no VAE path to override.
    cfg = compose_train_config([f"stage={stage}", f"{key}.feature_space={tmp_path}/export", "autoencoder=identity"])
    with pytest.raises(_Loaded):
        STAGES[stage](cfg).build_dataset()
    assert asked["autoencoder_path"] is None


class _Windows:
    """What VideoStage.sample_indices reads of a ClipWindowDataset: (clip, first frame, stride) per window."""

    def __init__(self, windows_per_clip: list[int]):
        self.index = [(clip, start, 1) for clip, count in enumerate(windows_per_clip) for start in range(count)]

    def __len__(self) -> int:
        return len(self.index)


def test_stage3_sample_windows_come_from_different_clips(tmp_path):
    # Before: the trainer took the first windows, which all belong to clip 0.
    stage = VideoStage(compose_train_config(["stage=3"]))
    data = _Windows([30, 20, 25, 40])
    picks = stage.sample_indices(data, 8)
    assert len(picks) == 2 and [data.index[i][0] for i in picks] == [0, 3]
    assert [data.index[i][0] for i in stage.sample_indices(_Windows([30]), 8)] == [0]  # one clip: one row
    assert stage.sample_indices(data, 1) == [0]


@pytest.mark.parametrize(("preview", "message"), [
    ("+stage2.edit_preview.Glasses=0.3", "stage2.edit_preview: unknown attribute 'Glasses'"),
    ("stage2.edit_preview.Eyeglasses=3", "stage2.edit_preview: alpha=3 for Eyeglasses is out of range"),
])  # fmt: skip
def test_a_bad_edit_preview_fails_when_stage2_builds_on_every_rank(tmp_path, preview, message):
    # Before: it failed at the first sample grid, on rank 0 only, leaving the other ranks waiting.
    cfg = compose_train_config(tiny_overrides(tmp_path, "stage=2", preview))
    stage = Stage2(cfg)
    stage.names = ["Eyeglasses", "Smiling", "Blond_Hair"]  # the default previews' attributes
    stage.train_codes = torch.randn(10, 64)
    stage.space = torch.nn.Identity()
    with pytest.raises(InputError, match=message):
        stage.build_modules()
    good = Stage2(compose_train_config(tiny_overrides(tmp_path, "stage=2")))
    good.names, good.train_codes, good.space = stage.names, stage.train_codes, stage.space
    assert list(good.build_modules().trainable) == ["attribute_classifier"]


def test_evaluate_video_with_no_windows_is_one_clear_error(tmp_path):
    # Before: windows=0 ran into an empty loader and a traceback (checked before the model loads).
    from helpers import run_script

    done = run_script("evaluate_video.py", f"model={tmp_path}", f"clips={tmp_path}", "windows=0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: windows=0 must be a positive integer"]


def test_ellipse_mask_marks_the_pixel_centres_inside_the_ellipse():
    from faceedittalker.metrics.image import ellipse_mask

    mask = ellipse_mask(10, center=(0.5, 0.5), radii=(0.2, 0.4))
    assert mask.shape == (10, 10) and mask.dtype == torch.bool
    # Pixel centres (i + 0.5) / 10: columns 0.35-0.65 (|dx| <= 0.2), rows 0.15-0.85 (|dy| <= 0.4).
    assert mask[5].nonzero().flatten().tolist() == [3, 4, 5, 6]
    assert mask[:, 5].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not mask[1, 3] and not mask[0].any()  # a corner of the bounding box is outside


def test_stage1_face_weights_weigh_the_inner_face_and_reject_bad_settings(tmp_path):
    from faceedittalker.metrics.image import ellipse_mask
    from faceedittalker.stages import Stage1

    assert Stage1(compose_train_config(tiny_overrides(tmp_path, "stage=1"))).face_weights(32) is None  # Eq. 11
    stage = Stage1(compose_train_config(tiny_overrides(tmp_path, "stage=1", "stage1.face_loss_weight=5",
                                                       "stage1.face_region=[0.5,0.6,0.25,0.2]")))
    weights = stage.face_weights(32)
    assert weights.shape == (1, 1, 32, 32) and set(weights.unique().tolist()) == {1.0, 5.0}
    assert torch.equal(weights[0, 0] == 5.0, ellipse_mask(32, (0.5, 0.6), (0.25, 0.2)))
    for override, message in [("stage1.face_loss_weight=-1", "face_loss_weight must be >= 0"),
                              ("stage1.face_region=[0.5,0.5,0.2]", "stage1.face_region must be")]:
        bad = Stage1(compose_train_config(tiny_overrides(tmp_path, "stage=1", override)))
        with pytest.raises(InputError, match=message):
            bad.build_modules()
