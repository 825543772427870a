"""The face upsampler (beyond the paper): the model, its stage-0 training, and a model folder that decodes x4."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_train_config, run_script_main, tiny_overrides
from PIL import Image

from faceedittalker.data.portrait import crop_face
from faceedittalker.data.upsampler_pairs import load_upsampler_pairs, save_upsampler_pairs
from faceedittalker.errors import InputError
from faceedittalker.metrics.world import PAIRS_INDEX_OFFSET, held_out_clip, upsampler_goal
from faceedittalker.models.face_upsampler import FaceUpsampler, area_downsample
from faceedittalker.pipeline import FaceEditTalkerPipeline, add_upsampler
from faceedittalker.stages import STAGES
from faceedittalker.stages.stage0_upsampler import degrade
from faceedittalker.training.trainer import Trainer

TINY = {"scale": 4, "block_out_channels": [8, 8, 8], "norm_num_groups": 4}


def test_an_untrained_upsampler_is_bicubic_and_its_shape_is_scale_times_the_input():
    upsampler = FaceUpsampler(**TINY)
    faces = torch.rand(3, 3, 8, 8) * 2 - 1
    bicubic = F.interpolate(faces, scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(upsampler(faces), bicubic)  # the residual starts at zero
    out = upsampler.upsample(faces, batch_size=2)
    assert out.shape == (3, 3, 32, 32) and float(out.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="levels"):
        FaceUpsampler(scale=4, block_out_channels=[8, 8])


@torch.no_grad()
def test_back_projection_makes_the_decoded_face_downsample_to_its_input(tmp_path):
    torch.manual_seed(0)
    faces = torch.rand(2, 3, 8, 8) * 1.6 - 0.8  # inside [-1, 1] with room, so the final clamp does not bind
    plain = FaceUpsampler(**TINY)
    torch.nn.init.normal_(plain.decoder.conv_out.weight, std=0.05)  # a residual that changes the low frequencies
    errors = []
    for steps in (0, 1, 3):
        upsampler = FaceUpsampler(**TINY, back_projection_steps=steps)
        upsampler.load_state_dict(plain.state_dict())
        out = upsampler.upsample(faces)
        if steps == 0:  # no back-projection: exactly the plain decoding
            torch.testing.assert_close(out, plain(faces).clamp(-1, 1))
        errors.append(float((area_downsample(out, 4) - faces).abs().mean()))
    # each round takes about two thirds of the inconsistency off (3 rounds: 0.136 -> 0.015)
    assert errors[0] > 0.05 and errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2 and errors[2] < errors[0] / 6
    upsampler.save_pretrained(tmp_path)  # the setting travels with the model folder
    assert FaceUpsampler.from_pretrained(tmp_path).config.back_projection_steps == 3
    # factor 2: consistent at half the input's size (4 px here), not at its own (the grain is left alone).
    coarse = FaceUpsampler(**TINY, back_projection_steps=3, back_projection_factor=2)
    coarse.load_state_dict(plain.state_dict())
    out = coarse.upsample(faces)
    at_half = float((area_downsample(out, 8) - area_downsample(faces, 2)).abs().mean())
    plain_at_half = float((area_downsample(plain(faces), 8) - area_downsample(faces, 2)).abs().mean())
    assert at_half < plain_at_half / 6 and float((area_downsample(out, 4) - faces).abs().mean()) > 2 * errors[2]
    # rows [0, 0.5]: the upper half is pulled to its input, the lower half (past the bicubic's reach) is untouched.
    upper = FaceUpsampler(**TINY, back_projection_steps=3, back_projection_rows=[0.0, 0.5])
    upper.load_state_dict(plain.state_dict())
    out = upper.upsample(faces)
    torch.testing.assert_close(out[..., 24:, :], plain(faces).clamp(-1, 1)[..., 24:, :])
    upper_error = float((area_downsample(out, 4) - faces)[..., :4, :].abs().mean())
    assert upper_error < float((area_downsample(plain(faces), 4) - faces)[..., :4, :].abs().mean()) / 6
    for bad in ({"back_projection_steps": -1}, {"back_projection_factor": 0}, {"back_projection_rows": [0.5, 0.5]}):
        with pytest.raises(ValueError, match="back_projection"):
            FaceUpsampler(**TINY, **bad)


def test_degrade_blurs_and_noises_within_its_bounds():
    faces = torch.rand(4, 3, 16, 16) * 1.6 - 0.8
    torch.testing.assert_close(degrade(faces, 0.0, 0.0), faces)
    torch.manual_seed(0)
    blurred = degrade(faces, 1.0, 0.0)
    # A blur keeps each image's mean (up to the replicated border) and lowers its pixel-to-pixel differences.
    assert torch.allclose(blurred.mean((1, 2, 3)), faces.mean((1, 2, 3)), atol=0.02)
    assert float(blurred.diff(dim=-1).abs().mean()) < float(faces.diff(dim=-1).abs().mean())
    torch.manual_seed(0)
    noised = degrade(faces, 0.0, 0.05)
    assert 0.0 < float((noised - faces).std()) < 0.05


def test_stage0_trains_an_upsampler_better_than_bicubic_and_exports_it(tmp_path, tiny_cache):
    steps = 120
    cfg = compose_train_config(tiny_overrides(
        tiny_cache, "resolution=32", "stage0.crop_size=32", "stage0.scale_images=16",
        "stage0.upsampler.model.block_out_channels=[16,16,16]", "stage0.upsampler.model.norm_num_groups=4",
        f"trainer.max_steps={steps}", f"trainer.checkpoint_every={steps}", f"trainer.sample_every={steps}",
        "trainer.batch_size=8", "trainer.optimizer.lr=2e-3", "trainer.lr_warmup_steps=1",
        "trainer.mixed_precision=no",  # Accelerate's state is one per process: the other tests' runs are fp32
        experiment="tiny/upsampler"))  # fmt: skip
    assert cfg.stage == 0 and cfg.stage0.target == "upsampler"
    run_dir = tmp_path / "upsampler"
    export = Trainer(cfg, STAGES[cfg.stage](cfg), run_dir).fit()
    metrics = json.loads((export / "upsampler_metrics.json").read_text())
    assert (metrics["scale"], metrics["resolution"], metrics["images"]) == (4, 32, 16)
    assert metrics["psnr_db"] > metrics["bicubic_psnr_db"] + 0.3, metrics  # it learned the faces' detail
    upsampler = FaceUpsampler.from_pretrained(export / "face_upsampler", use_safetensors=True)
    assert upsampler.scale == 4 and upsampler.upsample(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    grid = np.asarray(Image.open(run_dir / "samples" / f"step-{steps:08d}.png"))
    assert grid.shape[1] == 3 * 34 + 2  # input | bicubic | upsampler
    # A stage-0 target that does not exist is one clear error.
    bad = compose_train_config(tiny_overrides(tiny_cache, "stage0.target=superres", experiment="tiny/upsampler"))
    with pytest.raises(InputError, match="stage0.target=superres"):
        STAGES[0](bad)


@pytest.fixture(scope="module")
def upsampler_export(tmp_path_factory):
    """An upsampler export as stage 0 writes it: a random residual (not zero), so its frames differ from bicubic."""
    folder = tmp_path_factory.mktemp("upsampler") / "export"
    torch.manual_seed(0)
    upsampler = FaceUpsampler(**TINY)
    torch.nn.init.normal_(upsampler.decoder.conv_out.weight, std=1e-3)
    upsampler.save_pretrained(folder / "face_upsampler", safe_serialization=True)
    return folder


def test_a_model_with_an_upsampler_makes_faces_four_times_larger(tiny_model, upsampler_export, short_speech,
                                                                  tmp_path, monkeypatch):
    model = tmp_path / "model"
    assert run_script_main(monkeypatch, "export_model.py", f"model={tiny_model}", f"upsampler={upsampler_export}",
                           f"output={model}") == 0  # fmt: skip
    index = json.loads((model / "model_index.json").read_text())
    assert index["face_upsampler"] == "FaceUpsampler" and "face_upsampler" not in json.loads(
        (tiny_model / "model_index.json").read_text())  # a copy: the source folder is unchanged
    pipe = FaceEditTalkerPipeline.from_pretrained(model)
    plain = FaceEditTalkerPipeline.from_pretrained(model, upsample=False)
    assert (pipe.resolution, plain.resolution) == (128, 32) and plain.face_upsampler is None
    big = pipe(_portrait(), short_speech, paste_back=False, progress=False)
    small = plain(_portrait(), short_speech, paste_back=False, progress=False)
    assert big.frames.shape[1:] == (128, 128, 3) and small.frames.shape[1:] == (32, 32, 3)
    # The same denoised faces, then the upsampler: the large frames are the small ones upsampled (up to the
    # small frames' rounding to uint8).
    small_faces = torch.from_numpy(small.frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # (T, 3, 32, 32)
    expected = ((pipe.face_upsampler.upsample(small_faces) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    assert np.abs(big.frames.astype(np.float32) - expected).max() <= 2.5
    assert not np.allclose(big.frames, _bicubic(small.frames), atol=1)  # the learned residual is applied
    # edit_image returns the input face, the reconstruction and the edit at the upsampled size.
    edited = pipe.edit_image(_portrait(), "Eyeglasses", 0.5, steps=2)
    assert edited.face.shape == edited.reconstruction.shape == edited.edited.shape == (128, 128, 3)
    # The world's goal 5 scores it on held-out crops against bicubic: this one is bicubic plus a tiny residual.
    scored = upsampler_goal(pipe, faces=3)
    assert (scored["faces"], scored["resolution"], scored["face_size"]) == (3, 32, 128)
    assert 20 < scored["bicubic_psnr_db"] and abs(scored["psnr_db"] - scored["bicubic_psnr_db"]) < 0.5
    assert upsampler_goal(plain, faces=3) is None


def test_adding_an_upsampler_checks_its_folder_and_writes_nothing_on_error(tiny_model, tmp_path, monkeypatch,
                                                                            capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before = (model / "model_index.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_script_main(monkeypatch, "export_model.py", f"model={model}", f"upsampler={empty}") == 2
    assert "upsampler export" in capsys.readouterr().err
    assert run_script_main(monkeypatch, "export_model.py", f"model={model}") == 2
    assert "give upsampler=" in capsys.readouterr().err
    assert (model / "model_index.json").read_text() == before and not (model / "face_upsampler").exists()
    broken = tmp_path / "broken" / "face_upsampler"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text(json.dumps({"_class_name": "FaceUpsampler", "scale": 4,
                                                    "block_out_channels": [8, 8]}))  # fmt: skip
    (broken / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(InputError, match="cannot load the face upsampler"):
        add_upsampler(model, broken.parent)
    assert (model / "model_index.json").read_text() == before
    with pytest.raises(InputError, match="upsample must be true or false"):
        FaceEditTalkerPipeline.from_pretrained(model, upsample="yes")


def _bicubic(frames: np.ndarray) -> np.ndarray:
    faces = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    return F.interpolate(faces, scale_factor=4, mode="bicubic", align_corners=False).permute(0, 2, 3, 1).numpy()


def _portrait() -> np.ndarray:
    from faceedittalker.synthetic.sets import held_out_portrait

    return held_out_portrait(0, 256)[0]


def test_make_upsampler_pairs_pairs_the_model_frames_with_the_true_crops(tiny_model, tmp_path, monkeypatch, capsys):
    output = tmp_path / "pairs"
    args = [f"model={tiny_model}", f"output={output}", "clips=2", "clip_seconds=1", "seed=3"]
    assert run_script_main(monkeypatch, "make_upsampler_pairs.py", *args) == 0
    low, high = load_upsampler_pairs(output)
    info = json.loads((output / "pairs.json").read_text())
    assert low.dtype == high.dtype == torch.uint8 and low.shape[1:] == (3, 32, 32) and high.shape[1:] == (3, 128, 128)
    assert (info["pairs"], info["clips"], info["scale"], info["low_size"]) == (len(low), 2, 4, 32)
    assert 2 * 20 <= len(low) <= 2 * 26  # ~25 frames a second per clip
    # The high frames are the rendered truth of the clips' people, cropped as the pipeline crops the portrait.
    clip = held_out_clip(PAIRS_INDEX_OFFSET + 0, 1.0, 256, 3, moving=True, eyeglasses=True)
    crop = FaceEditTalkerPipeline.from_pretrained(tiny_model).prepare_portrait(clip["portrait"])[1]
    for t in (0, 5):
        assert torch.equal(high[t], torch.from_numpy(crop_face(clip["frames"][t], crop, 128)).permute(2, 0, 1))
    assert not torch.equal(low[0], low[-1])  # the model's frames, one per truth frame
    # Written once: a second run without overwrite is one line and exit 2, the folder untouched.
    assert run_script_main(monkeypatch, "make_upsampler_pairs.py", *args) == 2
    assert "exists" in capsys.readouterr().err and load_upsampler_pairs(output)[0].shape == low.shape


def test_stage0_refines_an_upsampler_on_pairs_from_its_init(tmp_path, tiny_cache, upsampler_export):
    """Pairs whose low frames are the truth downsampled and darkened (an error a video model could make): the
    refined upsampler learns to undo it, which degraded renders alone never teach."""
    generator = torch.Generator().manual_seed(0)
    high = F.interpolate(torch.rand(24, 3, 8, 8, generator=generator), size=128, mode="bilinear")  # smooth faces
    low = (F.interpolate(high, scale_factor=0.25, mode="area") - 0.25).clamp(0, 1)
    as_uint8 = lambda x: (x * 255).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    save_upsampler_pairs(tmp_path / "pairs", as_uint8(low), as_uint8(high), {"made_by": "test"})
    steps = 60
    cfg = compose_train_config(tiny_overrides(
        tiny_cache, "resolution=32", "stage0.crop_size=32", "stage0.scale_images=16",
        f"stage0.upsampler.pairs={tmp_path / 'pairs'}", "stage0.upsampler.pairs_fraction=1.0",
        f"stage0.upsampler.init={upsampler_export}", f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every={steps}", f"trainer.sample_every={steps}", "trainer.batch_size=8",
        "trainer.optimizer.lr=2e-3", "trainer.mixed_precision=no",
        "stage0.upsampler.back_projection=null",  # back-projection would pull the output back to the darkening
        experiment="tiny/upsampler_refine"))  # fmt: skip
    stage = STAGES[cfg.stage](cfg)
    start = stage.build_modules().trainable["face_upsampler"]
    init = FaceUpsampler.from_pretrained(upsampler_export / "face_upsampler")
    for name, value in init.state_dict().items():
        torch.testing.assert_close(start.state_dict()[name], value)  # from init, not from `model`
    generated, truth = stage.pair_crops(4, 32, 4)  # one aligned crop of the pairs
    assert generated.shape == (4, 3, 8, 8) and truth.shape == (4, 3, 32, 32)
    darkened = (F.interpolate((truth + 1) / 2, scale_factor=0.25, mode="area") - 0.25).clamp(0, 1) * 2 - 1
    assert float((generated - darkened).abs().max()) < 0.02  # up to uint8 rounding
    # pairs_rows keeps the crops inside those rows of the face: pixels that name their row show where they came from.
    saved = stage.pairs
    rows = torch.arange(32, dtype=torch.uint8)[None, None, :, None].expand(2, 3, 32, 32)
    stage.pairs = (rows, torch.zeros(2, 3, 128, 128, dtype=torch.uint8))
    for _ in range(5):
        generated, _ = stage.pair_crops(2, 32, 4, rows=[0.75, 1.0])
        taken = ((generated + 1) * 127.5).round()  # (2, 3, 8, 8) row numbers
        assert float(taken.min()) == 24 and float(taken.max()) == 31
    stage.pairs = saved
    export = Trainer(cfg, STAGES[cfg.stage](cfg), tmp_path / "refine").fit()
    metrics = json.loads((export / "upsampler_metrics.json").read_text())
    assert metrics["pairs_psnr_db"] > metrics["pairs_bicubic_psnr_db"] + 3, metrics  # the darkening is undone
    assert FaceUpsampler.from_pretrained(export / "face_upsampler").config.back_projection_steps == 0
    recipe = compose_train_config(tiny_overrides(tiny_cache, f"stage0.upsampler.pairs={tmp_path / 'pairs'}",
                                                 f"stage0.upsampler.init={upsampler_export}", "resolution=32",
                                                 experiment="tiny/upsampler_refine"))  # fmt: skip
    refined = STAGES[0](recipe).build_modules().trainable["face_upsampler"]
    settings = refined.config  # the recipe's back-projection over init's none; the weights still init's
    assert settings.back_projection_steps == 1 and settings.back_projection_factor == 1
    assert settings.back_projection_rows is None
    torch.testing.assert_close(refined.state_dict(), init.state_dict())
    bad = compose_train_config(tiny_overrides(tiny_cache, f"stage0.upsampler.pairs={tmp_path}",
                                              f"stage0.upsampler.init={upsampler_export}",
                                              experiment="tiny/upsampler_refine"))
    with pytest.raises(InputError, match="not an upsampler pairs folder"):
        STAGES[0](bad).build_modules()
    narrow = compose_train_config(tiny_overrides(tiny_cache, f"stage0.upsampler.pairs={tmp_path / 'pairs'}",
                                                 f"stage0.upsampler.init={upsampler_export}", "resolution=32",
                                                 "stage0.upsampler.pairs_rows=[0.9,1.0]",
                                                 experiment="tiny/upsampler_refine"))  # fmt: skip
    with pytest.raises(InputError, match="pairs_rows"):
        STAGES[0](narrow).build_modules()
    for bad in ("{steps:-1}", "{step:1}"):  # a bad or misspelt back-projection setting is one InputError
        wrong = compose_train_config(tiny_overrides(tiny_cache, f"stage0.upsampler.init={upsampler_export}",
                                                    f"stage0.upsampler.back_projection={bad}",
                                                    experiment="tiny/upsampler"))  # fmt: skip
        with pytest.raises(InputError, match="back_projection"):
            STAGES[0](wrong).build_modules()


def test_back_projection_settings_read_back_as_stage_0_names_them():
    """`back_projection` is what world.json records of a model's decoding: stage 0's {steps, factor, rows}."""
    assert FaceUpsampler(**TINY).back_projection == {"steps": 0, "factor": 1, "rows": None}
    upsampler = FaceUpsampler(**TINY, back_projection_steps=2, back_projection_factor=2, back_projection_rows=(0, 0.5))
    assert upsampler.back_projection == {"steps": 2, "factor": 2, "rows": [0.0, 0.5]}
