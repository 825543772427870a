"""Stage 3 (Alg. 3) with the real configs on the synthetic clips: the video model and the landmark predictor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import compose_train_config, run_script, tiny_overrides
from PIL import Image
from safetensors.torch import load_file

from faceedittalker.data.clips import ClipWindowDataset
from faceedittalker.landmarks.render import default_thickness, render_landmarks, render_sequence
from faceedittalker.landmarks.topology import LIP_POINTS
from faceedittalker.metrics.image import psnr
from faceedittalker.models.landmark_predictor import LandmarkPredictor
from faceedittalker.models.talking_head import TalkingHeadModel
from faceedittalker.models.unet import ConditionalUNet
from faceedittalker.stages import STAGES
from faceedittalker.testing import _perturb
from faceedittalker.training import checkpoint as ckpt
from faceedittalker.training.trainer import Trainer

# 4 short synthetic clips (64 px) are enough to exercise everything; generated once per session.
CLIPS = ["clip_data.root.count=4", "clip_data.root.clip_seconds=[1.2,1.6]"]


def stage3_overrides(cache, *extra: str) -> list[str]:
    return [*tiny_overrides(cache, experiment="tiny/stage3"), *CLIPS, "trainer.batch_size=2",
            "trainer.num_sample_images=1", "stage3.video.num_frames=4", "stage3.video.window_overlap=2", *extra]


@pytest.fixture(scope="session")
def stage1_export(tiny_cache, tmp_path_factory):
    cfg = compose_train_config(tiny_overrides(tiny_cache, "trainer.max_steps=2", "trainer.sample_every=100"))
    return Trainer(cfg, STAGES[1](cfg), tmp_path_factory.mktemp("stage1") / "run").fit()


def train(run_dir, overrides):
    cfg = compose_train_config(overrides)
    trainer = Trainer(cfg, STAGES[3](cfg), run_dir)
    return trainer.fit(), trainer


def test_clip_windows_for_stage3(tiny_cache):
    cfg = compose_train_config(stage3_overrides(tiny_cache))
    root = STAGES[3](cfg).cfg.clip_data.root
    from hydra.utils import instantiate

    folder = instantiate(root)
    kwargs = dict(num_frames=4, frame_strides=[1, 3], resolution=32, landmark_image_size=64, seed=0)
    data = ClipWindowDataset(folder, **kwargs)
    assert {stride for _, _, stride in data.index} == {1, 3}  # stride augmentation: both strides are windows
    item = data[len(data) - 1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["reference"].shape == (3, 32, 32)
    assert item["landmark_images"].shape == (4, 3, 64, 64) and item["reference_landmark_image"].shape == (3, 64, 64)
    assert item["landmarks"].shape == (4, 478, 3) and item["reference_landmarks"].shape == (478, 3)
    # L is drawn exactly as at inference, from the frame's own landmarks.
    expected = render_landmarks(item["landmarks"][2].numpy(), 64, default_thickness(64))
    np.testing.assert_array_equal((item["landmark_images"][2].movedim(0, -1) * 255).round().byte().numpy(), expected)
    # The reference is another frame of the same clip, the same each time the window is read (exact resume).
    again = ClipWindowDataset(folder, **kwargs)[len(data) - 1]
    torch.testing.assert_close(again["reference"], item["reference"])
    clip = json.loads((data.clips[data.index[-1][0]] / "meta.json").read_text())
    all_landmarks = np.load(data.clips[data.index[-1][0]] / "landmarks.npy")
    matches = np.abs(all_landmarks - item["reference_landmarks"].numpy()).max(axis=(1, 2)) < 1e-7
    assert matches.any() and clip["num_frames"] == len(all_landmarks)
    # Held-out clips are whole clips, disjoint from the training ones.
    train_clips = ClipWindowDataset(folder, num_frames=4, val_every=2, split="train", load_frames=False).clips
    val_clips = ClipWindowDataset(folder, num_frames=4, val_every=2, split="val", load_frames=False).clips
    assert len(train_clips) == len(val_clips) == 2 and not set(train_clips) & set(val_clips)


@pytest.fixture(scope="session")
def video_run(tiny_cache, stage1_export, tmp_path_factory):
    """4 steps of stage 3 (video) with two sample clips; tests that train further work on a copy of the run."""
    overrides = stage3_overrides(tiny_cache, f"stage3.feature_space={stage1_export}", "trainer.num_sample_images=2")
    run_dir = tmp_path_factory.mktemp("stage3") / "run"
    export, trainer = train(run_dir, overrides)
    return export, trainer, run_dir, overrides


def test_stage3_video_trains_exports_a_talking_head_model_and_resumes(tmp_path, video_run, stage1_export):
    export, trainer, run_dir, overrides = video_run
    assert trainer.stage.name == "stage3" and sorted(trainer.models) == ["landmark_encoder", "unet"]
    model = TalkingHeadModel.from_pretrained(export)
    assert model.unet.config.temporal_layers and model.unet.config.cond_channels == 4
    assert (model.num_frames, model.window_overlap, model.landmark_image_size) == (4, 2, 64)
    # The spatial weights start from stage 1 (then train); the temporal layers are new.
    stage1 = load_file(stage1_export / "unet" / "diffusion_pytorch_model.safetensors")
    stage3 = load_file(export / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(stage1) < set(stage3) and any(".temporal." in key for key in stage3)
    assert stage3["conv_in.weight"].shape[1] == stage1["conv_in.weight"].shape[1] + 4
    # The frozen E_sem came from stage 1's folder; the export does not record that machine-local path.
    assert "_name_or_path" not in json.loads((export / "semantic_encoder" / "config.json").read_text())
    # A video longer than one window comes out with one frame per landmark image.
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    landmarks = torch.rand(1, 7, 3, 64, 64)
    z_sem, z_T = model.encode_reference(reference, landmarks[:, 0])
    assert model.generate(z_T, z_sem, landmarks, landmarks[:, 0], steps=2).shape == (1, 7, 3, 32, 32)
    # Sample grid: per clip 3 rows (truth | L | generated) x 4 frames of 32 px with 2 px padding, two clips.
    grid = np.asarray(Image.open(run_dir / "samples" / "step-00000004.png"))
    assert grid.shape == (6 * 34 + 2, 4 * 34 + 2, 3)
    # The evaluation script: metrics for both drives and the still baseline, and a 4-row picture.
    clips = trainer.stage.build_dataset().clips[0].parent
    done = run_script("evaluate_video.py", f"model={export}", f"clips={clips}", "windows=2", "batch_size=2",
                      "steps=2", f"output={tmp_path / 'm.json'}", f"plot={tmp_path / 'v.png'}", "zoom=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["windows"] == 2 and set(metrics) >= {"driven_by_L", "reference_landmarks", "still"}
    assert all(0 < metrics[k]["mouth_psnr"] < 100 for k in ("driven_by_L", "reference_landmarks", "still"))
    assert np.asarray(Image.open(tmp_path / "v.png")).shape == (4 * 34 + 2, 4 * 34 + 2, 3)
    bad = run_script("evaluate_video.py", f"model={tmp_path}", f"clips={clips}")
    assert bad.returncode == 2 and "not a stage-3 video model folder" in bad.stderr
    no_windows = run_script("evaluate_video.py", f"model={export}", f"clips={clips}", "windows=0")
    lines = [line for line in no_windows.stderr.strip().splitlines() if line.startswith("error:")]
    assert no_windows.returncode == 2 and lines == ["error: windows=0 must be a positive integer"]
    assert "Traceback" not in no_windows.stderr
    # Re-running with more steps resumes from the last checkpoint (on a copy: the fixture's run stays at step 4).
    shutil.copytree(run_dir, tmp_path / "run")
    _, resumed = train(tmp_path / "run", [*overrides, "trainer.max_steps=6"])
    assert resumed.step == 6 and ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints").name.endswith("06")


def _grid_rows(path, rows: int, size: int = 32, padding: int = 2) -> list[np.ndarray]:
    """The rows of an `image_grid` picture without its padding, as float arrays (F columns side by side)."""
    grid = np.asarray(Image.open(path)).astype(np.float64)
    return [grid[padding + r * (size + padding):(r + 1) * (size + padding), padding:-padding] for r in range(rows)]


def test_stage3_sample_grid_shows_two_different_clips_and_frames_that_follow_them(video_run):
    _, _, run_dir, _ = video_run
    truth_a, drawn_a, generated_a, truth_b, drawn_b, generated_b = _grid_rows(
        run_dir / "samples" / "step-00000004.png", rows=6)
    # Two clips, not one twice (the defect fixed in sample_indices). Measured mean |difference| of the truth rows
    # 39 (uint8); every row has content (std >= 42).
    assert np.abs(truth_a - truth_b).mean() > 20
    assert min(row.std() for row in (truth_a, drawn_a, generated_a, truth_b, drawn_b, generated_b)) > 20
    assert np.abs(drawn_a - drawn_b).mean() > 5  # measured 106: each clip's own landmark images
    # Each generated row is its own clip's face: measured 7.6 / 8.7 from its truth vs 43 / 46 from the other's.
    for generated, own, other in ((generated_a, truth_a, truth_b), (generated_b, truth_b, truth_a)):
        assert np.abs(generated - own).mean() < 0.5 * np.abs(generated - other).mean()


def _untrained_copy(export) -> TalkingHeadModel:
    """The exported architecture with eps_theta and E_ldm freshly initialised and perturbed (their output layers
    start at zero, and an all-zero eps makes DDIM inversion and decoding exact for any image)."""
    model = TalkingHeadModel.from_pretrained(export).eval()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    for module in (model.unet, model.landmark_encoder):
        module.load_state_dict(type(module).from_config(module.config).state_dict())
        _perturb(module, 0.02, generator)
    return model


def _clip_references(trainer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference frames, their landmark images and landmarks of the run's two sample clips (no data loading)."""
    return tuple(trainer.sample_batch[key] for key in ("reference", "reference_landmark_image", "reference_landmarks"))


def _still(model: TalkingHeadModel, codes: tuple[torch.Tensor, torch.Tensor], reference_landmark_images: torch.Tensor,
           drive: torch.Tensor | None = None) -> torch.Tensor:
    """Frames from each reference's (z_sem, Z_T), every frame driven by one landmark image `drive` (B, 3, S, S),
    by default the reference's own."""
    z_sem, z_T = codes
    drive = reference_landmark_images if drive is None else drive
    frames = drive[:, None].expand(-1, model.num_frames, -1, -1, -1)
    return model.generate(z_T, z_sem, frames, reference_landmark_images)


def test_stage3_export_reconstructs_the_reference_driven_by_its_own_landmarks(video_run):
    export, trainer, _, _ = video_run
    references, reference_landmark_images, _ = _clip_references(trainer)
    trained, untrained = (_still(model, model.encode_reference(references, reference_landmark_images),
                                 reference_landmark_images)
                          for model in (TalkingHeadModel.from_pretrained(export).eval(), _untrained_copy(export)))
    target = references[:, None].expand_as(trained).flatten(0, 1)
    trained_psnr, untrained_psnr = psnr(trained.flatten(0, 1), target), psnr(untrained.flatten(0, 1), target)
    # Measured on all 4 clips: 29.8-31.7 dB trained (every frame) vs 7.7-8.3 dB untrained (a gap of 21.5 dB); two
    # different clips' references are 12-15 dB apart.
    assert trained_psnr.min() > untrained_psnr.max() + 15
    assert trained_psnr.min() > 25


def test_stage3_frames_driven_by_an_opened_mouth_change_in_the_mouth_box(video_run):
    export, trainer, _, _ = video_run
    model = TalkingHeadModel.from_pretrained(export).eval()
    references, reference_landmark_images, landmarks = _clip_references(trainer)
    opened = landmarks.numpy().copy()  # the reference's landmarks with the lips stretched 3x vertically
    centre = opened[:, LIP_POINTS, 1].mean(axis=1, keepdims=True)
    opened[:, LIP_POINTS, 1] = centre + 3 * (opened[:, LIP_POINTS, 1] - centre)
    opened_images = torch.from_numpy(render_sequence(opened, model.landmark_image_size)).movedim(-1, -3).float() / 255
    codes = model.encode_reference(references, reference_landmark_images)
    own = _still(model, codes, reference_landmark_images)
    moved = _still(model, codes, reference_landmark_images, drive=opened_images)
    change = (moved - own).abs().mean(dim=2)  # (B, F, R, R)
    size = change.shape[-1]
    for clip, lips in enumerate(opened[:, LIP_POINTS, :2]):
        (x0, y0), (x1, y1) = np.floor(lips.min(0) * size).astype(int), np.ceil(lips.max(0) * size).astype(int)
        box = torch.zeros(size, size, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        inside, outside = change[clip][:, box].mean().item(), change[clip][:, ~box].mean().item()
        # Measured (4 warm-up steps of E_ldm): 3e-4 inside, 9-20x the change outside the box.
        assert inside > 1e-5 and inside > 3 * outside


def test_stage3_video_with_the_single_scale_landmark_encoder(tmp_path, tiny_cache, stage1_export):
    overrides = stage3_overrides(tiny_cache, f"stage3.feature_space={stage1_export}", "landmark_encoder=conv",
                                 "trainer.max_steps=2", "stage3.video.train_spatial=false")  # fmt: skip
    export, trainer = train(tmp_path / "run", overrides)
    model = TalkingHeadModel.from_pretrained(export)
    assert model.landmark_encoder.config.residual_channels == [] and not model.landmark_encoder.levels
    # Motion-only training: the spatial weights are still those of stage 1.
    stage1 = ConditionalUNet.from_pretrained(stage1_export / "unet")
    for name, value in stage1.state_dict().items():
        if not name.startswith("conv_in"):  # conv_in learns the new F channels
            torch.testing.assert_close(model.unet.state_dict()[name], value)


@pytest.fixture(scope="session")
def landmark_run(tiny_cache, tmp_path_factory):
    overrides = stage3_overrides(tiny_cache, "stage3.target=landmarks", "stage3.landmarks.num_frames=16",
                                 "stage3.landmarks.val_every=4")  # fmt: skip
    return train(tmp_path_factory.mktemp("landmarks") / "run", overrides)


def test_stage3_landmark_predictor_trains_and_reports_held_out_metrics(landmark_run, tiny_cache):
    export, trainer = landmark_run
    assert trainer.stage.name == "stage3-landmarks"
    predictor = LandmarkPredictor.from_pretrained(export / "landmark_predictor")
    assert predictor.config.audio_dim == 80  # tiny: 80 log-mel bands
    assert json.loads((export / "audio_encoder.json").read_text()) == {"kind": "mel", "n_mels": 80, "fps": 25,
                                                                       "name": "logmel80"}  # a kind, no callable
    metrics = json.loads((export / "landmark_metrics.json").read_text())
    assert metrics["windows"] >= 1 and metrics["frames"] == 16 * metrics["windows"] and metrics["mouth_lmd_px512"] > 0
    assert -1 <= metrics["mouth_opening_pearson_r"] <= 1
    # The clips' audio features were cached once, under the encoder's name.
    cached = list(tiny_cache.rglob("audio_features/logmel80.npy"))
    assert len(cached) == 4


@pytest.mark.parametrize("override,message", [
    ("stage3.feature_space=null", "needs a trained stage-1 model"),
    ("stage3.target=audio", "stage3.target=audio is not one of"),
    ("stage3.video.mouth_loss_weight=-1", "mouth_loss_weight must be >= 0"),
    ("clip_data.root={tmp}/no-clips", "clip folder not found"),
])  # fmt: skip
def test_stage3_bad_input_is_one_line_and_exit_code_2(tmp_path, tiny_cache, override, message):
    overrides = [o for o in stage3_overrides(tiny_cache) if not o.startswith("clip_data.root.")]
    if override.startswith("clip_data.root"):
        overrides.append("stage3.feature_space=" + str(tmp_path))  # never reached: the clips fail first
        overrides.append("stage3.target=landmarks")
    result = run_script("train.py", *overrides, override.format(tmp=tmp_path), f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_mouth_psnr_looks_only_at_the_mouth_box():
    from faceedittalker.landmarks.topology import LIP_POINTS
    from faceedittalker.metrics.image import mouth_psnr

    landmarks = torch.full((1, 2, 478, 3), 0.5)
    landmarks[..., LIP_POINTS, 0] = torch.linspace(0.4, 0.6, len(LIP_POINTS))  # mouth box x 0.4-0.6
    landmarks[..., LIP_POINTS, 1] = torch.linspace(0.7, 0.8, len(LIP_POINTS))  # y 0.7-0.8
    truth = torch.zeros(1, 2, 3, 40, 40)
    outside = truth.clone()
    outside[..., :10, :] = 1.0  # the forehead changes: the mouth score does not see it
    assert mouth_psnr(outside, truth, landmarks) > 100
    inside = truth.clone()
    inside[..., 28:32, 16:24] = 1.0  # the mouth changes
    assert mouth_psnr(inside, truth, landmarks) < 15


def test_lip_box_mask_covers_the_mouth_box_and_weighs_the_stage3_loss():
    from omegaconf import OmegaConf

    from faceedittalker.landmarks.topology import LIP_POINTS
    from faceedittalker.metrics.image import lip_box_mask
    from faceedittalker.stages.stage3_video import VideoStage

    landmarks = torch.full((2, 3, 478, 3), 0.5)
    landmarks[..., LIP_POINTS, 0] = torch.linspace(0.4, 0.6, len(LIP_POINTS))  # x 0.4-0.6
    landmarks[..., LIP_POINTS, 1] = torch.linspace(0.7, 0.8, len(LIP_POINTS))  # y 0.7-0.8
    mask = lip_box_mask(landmarks, 40, margin=0.0)
    assert mask.shape == (2, 3, 40, 40)
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[28:32, 16:24] = True  # rows 0.7-0.8, columns 0.4-0.6 of 40 px
    assert torch.equal(mask[1, 2], expected)
    assert lip_box_mask(landmarks, 40).sum() > mask.sum()  # the default margin widens it

    stage = VideoStage.__new__(VideoStage)  # only the config is read
    stage.cfg = OmegaConf.create({"stage3": {"video": {"mouth_loss_weight": 1.0}}})
    assert stage.mouth_weights({}, 40) is None  # Eq. 13 as written: no landmarks needed
    stage.cfg.stage3.video.mouth_loss_weight = 5.0
    weights = stage.mouth_weights({"landmarks": landmarks}, 40)
    assert weights.shape == (2, 3, 1, 40, 40)
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    assert torch.equal(weights[:, :, 0] == 5.0, lip_box_mask(landmarks, 40))


def test_evaluate_landmarks_script_reports_metrics_and_draws_a_clip(tmp_path, landmark_run, tiny_cache):
    export, trainer = landmark_run
    clips = trainer.stage.val_set.clips[0].parent
    done = run_script("evaluate_landmarks.py", f"model={export}", f"clips={clips}", "num_frames=16",
                      f"output={tmp_path / 'm.json'}", f"plot={tmp_path / 'p.png'}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["clips"] == 4 and metrics["frames"] == 16 * metrics["windows"] > 0
    assert f"\"mouth_lmd_px512\": {metrics['mouth_lmd_px512']}" in done.stdout  # printed too
    picture = np.asarray(Image.open(tmp_path / "p.png"))
    assert picture.shape == (2 * 96 + 80, 12 * 96, 3) and picture[:96].max() > 0  # true | predicted | curves
    bad = run_script("evaluate_landmarks.py", f"model={tmp_path}", f"clips={clips}", f"plot={tmp_path / 'q.png'}")
    assert bad.returncode == 2 and "not a stage-3 landmark export" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "q.png").exists()


def test_cached_clip_latents_give_the_batches_of_the_frozen_encoders_without_decoding_video(
        tmp_path, tiny_cache, stage1_export, monkeypatch, caplog):
    from accelerate import PartialState
    from torch.utils.data import DataLoader

    import faceedittalker.data.clips as clips
    from faceedittalker.data.clip_latents import clip_latent_path
    from faceedittalker.errors import InputError

    PartialState(cpu=True)
    cfg = compose_train_config(stage3_overrides(tiny_cache, f"stage3.feature_space={stage1_export}",
                                                "stage3.video.latent_cache=true", "stage3.video.encode_batch_size=3"))
    stage = STAGES[3](cfg)
    cached = stage.build_dataset()
    modules = {**stage.build_modules().frozen}
    plain = stage.sample_dataset(cached)  # frames, as the sample grids read them
    assert cached.latent_key and plain.latent_key is None and len(cached) == len(plain)
    items = [0, len(cached) // 2, len(cached) - 1]
    plain_batch = next(iter(DataLoader(torch.utils.data.Subset(plain, items), batch_size=3)))
    # The cache is what training reads: with video decoding broken, the cached batch still loads.
    monkeypatch.setattr(clips, "read_frames_at", lambda *a, **k: pytest.fail("decoded frames"))
    cached_batch = next(iter(DataLoader(torch.utils.data.Subset(cached, items), batch_size=3)))
    assert "frames" not in cached_batch and cached_batch["latents"].shape == (3, 4, 3, 32, 32)
    z0_cached, z_sem_cached = stage.encode(cached_batch, modules)
    z0, z_sem = stage.encode(plain_batch, modules)
    torch.testing.assert_close(z0_cached, z0, atol=5e-4, rtol=0)  # float16 storage of values in [-1, 1]
    torch.testing.assert_close(z_sem_cached, z_sem, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached_batch["landmark_images"], plain_batch["landmark_images"])
    # A truncated cache file is a clear error when read, and the stage rewrites it (with a note) on the next run.
    path = clip_latent_path(cached.clips[0], cached.latent_key)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="unreadable.*latent_cache=true"):
        ClipWindowDataset(plain.clips[0].parent, num_frames=4, resolution=32, latent_key=cached.latent_key)
    monkeypatch.undo()
    stage = STAGES[3](cfg)
    with caplog.at_level("INFO"):
        stage.build_dataset()
    assert "rewriting the latent cache" in caplog.text and "1 of 4 clips encoded now" in caplog.text


def test_frozen_vae_encodes_in_chunks_and_in_bf16_within_bf16_precision():
    from diffusers import AutoencoderKL

    from faceedittalker.data.clip_latents import encode_frames
    from faceedittalker.models.autoencoder import LatentAutoencoder

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    autoencoder = LatentAutoencoder(vae)
    frames = torch.rand(7, 3, 32, 32) * 2 - 1
    whole = autoencoder.encode(frames)
    torch.testing.assert_close(encode_frames(autoencoder, frames, 3), whole, atol=1e-5, rtol=1e-5)
    in_bf16 = encode_frames(autoencoder, frames, 3, torch.bfloat16)
    assert in_bf16.dtype == torch.float32 and not torch.equal(in_bf16, whole)  # really computed in bf16
    torch.testing.assert_close(in_bf16, whole, atol=2e-2 * whole.abs().max().item(), rtol=2e-2)


@pytest.mark.slow  # a stage-3 run: minutes on the shared 2-core machine
def test_stage3_video_trains_from_cached_latents_and_samples_from_frames(tmp_path, tiny_cache, stage1_export):
    overrides = stage3_overrides(tiny_cache, f"stage3.feature_space={stage1_export}", "stage3.video.latent_cache=true",
                                 "trainer.max_steps=2", "trainer.sample_every=2", "trainer.gradient_checkpointing=true")
    export, trainer = train(tmp_path / "run", overrides)
    assert trainer.loader.dataset.latent_key and "frames" in trainer.sample_batch
    assert TalkingHeadModel.from_pretrained(export).unet.config.temporal_layers
    assert (tmp_path / "run" / "samples" / "step-00000002.png").is_file()
