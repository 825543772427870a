"""Stage 0: the world's own small VAE for E_img, trained, exported, and used by stage 1 as the SD-VAE would be."""

from __future__ import annotations

import json

import numpy as np
import torch
from helpers import compose_train_config, tiny_overrides
from hydra.utils import instantiate
from PIL import Image

from faceedittalker.metrics.image import psnr
from faceedittalker.models.autoencoder import LatentAutoencoder, build_autoencoder
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages import STAGES
from faceedittalker.stages.stage0_autoencoder import build_small_vae, random_crop
from faceedittalker.training.trainer import Trainer

# 32 px -> 4 x 16 x 16 with two tiny levels, so a few dozen steps on 2 cores show learning.
SMALL = ["resolution=32", "semantic_encoder.image_size=32", "semantic_encoder.channel_mult=[1,2,2]",
         "stage0.vae.block_out_channels=[8,16]", "stage0.vae.norm_num_groups=4", "stage0.crop_size=16",
         "stage0.scale_images=16", "sampling.invert_steps=4"]  # trailing grid (tiny_latent): steps dividing 1000


def _train_autoencoder(tmp_path, cache, steps: int = 150):
    cfg = compose_train_config(tiny_overrides(cache, *SMALL, f"trainer.max_steps={steps}", "trainer.lr_warmup_steps=1",
                                              f"trainer.checkpoint_every={steps}", f"trainer.sample_every={steps}",
                                              "trainer.optimizer.lr=3e-3", experiment="tiny_latent/autoencoder"))
    run_dir = tmp_path / "vae"
    export = Trainer(cfg, STAGES[cfg.stage](cfg), run_dir).fit()
    return cfg, run_dir, export


def test_stage0_trains_a_vae_whose_export_loads_like_the_sd_vae_with_unit_latents(tmp_path, tiny_cache):
    cfg, run_dir, export = _train_autoencoder(tmp_path, tiny_cache)
    metrics = json.loads((export / "autoencoder_metrics.json").read_text())
    assert metrics["latent_shape"] == [4, 16, 16] and metrics["images"] == 16

    # Loaded through the same entry as the SD-VAE (`autoencoder.pretrained=DIR`).
    autoencoder = build_autoencoder(kind="vae", pretrained=str(export / "autoencoder"))
    assert isinstance(autoencoder, LatentAutoencoder) and autoencoder.downsample_factor == 2
    assert autoencoder.scaling_factor == metrics["scaling_factor"]
    dataset = instantiate(cfg.data)
    images = torch.stack([dataset[i]["image"] for i in range(16)])
    latents = autoencoder.encode(images)  # (16, 4, 16, 16), scaled
    assert latents.shape == (16, 4, 16, 16)
    assert abs(float(latents.std()) - 1.0) < 1e-3  # scaling_factor was measured on these images
    trained = float(psnr(autoencoder.decode(latents), images).mean())
    assert abs(trained - metrics["round_trip_psnr_db"]) < 0.05

    # Training taught it something (150 tiny steps: learning, not quality): the same architecture untrained (same
    # init seed) round-trips worse.
    torch.manual_seed(cfg.seed)
    untrained = LatentAutoencoder(build_small_vae(32, [8, 16], norm_num_groups=4))
    baseline = float(psnr(untrained.decode(untrained.encode(images)), images).mean())
    assert trained > baseline + 3, (trained, baseline)

    # Sample grid: input | round trip, two 32 px rows.
    grid = np.asarray(Image.open(run_dir / "samples" / "step-00000150.png"))
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3)


def test_stage1_runs_in_the_latent_space_of_the_stage0_export(tmp_path, tiny_cache):
    _, _, vae_export = _train_autoencoder(tmp_path, tiny_cache, steps=4)
    vae = f"autoencoder.pretrained={vae_export / 'autoencoder'}"
    cfg = compose_train_config(tiny_overrides(tiny_cache, *SMALL, vae, experiment="tiny_latent/stage1"))
    export = Trainer(cfg, STAGES[cfg.stage](cfg), tmp_path / "stage1").fit()
    space = ImageFeatureSpace.from_pretrained(export)
    assert space.resolution == 32 and space.latent_shape(2) == (2, 4, 16, 16)
    faces = torch.zeros(2, 3, 32, 32)
    z_sem = space.encode_semantic(faces)
    assert space.decode(space.encode_stochastic(faces, z_sem), z_sem).shape == (2, 3, 32, 32)


def test_stage3_runs_in_the_latent_space_and_its_model_folder_carries_the_vae(tmp_path, tiny_cache):
    from faceedittalker.models.talking_head import TalkingHeadModel
    from faceedittalker.pipeline import assemble_model
    from faceedittalker.testing import build_random_exports

    _, _, vae_export = _train_autoencoder(tmp_path, tiny_cache, steps=4)
    vae = f"autoencoder.pretrained={vae_export / 'autoencoder'}"
    cfg = compose_train_config(tiny_overrides(tiny_cache, *SMALL, vae, experiment="tiny_latent/stage1"))
    stage1 = Trainer(cfg, STAGES[cfg.stage](cfg), tmp_path / "stage1").fit()
    clips = ["clip_data.root.count=2", "clip_data.root.clip_seconds=[1.2,1.4]", "clip_data.root.resolution=32"]
    cfg = compose_train_config(tiny_overrides(
        tiny_cache, *SMALL, *clips, vae, f"stage3.feature_space={stage1}", "trainer.batch_size=2",
        "trainer.num_sample_images=1", "stage3.video.num_frames=4", "stage3.video.window_overlap=2",
        experiment="tiny_latent/stage3"))  # fmt: skip
    assert cfg.stage3.video.latent_cache and cfg.sampling.invert_steps == 4
    video = Trainer(cfg, STAGES[3](cfg), tmp_path / "stage3").fit()
    _, landmarks, _ = build_random_exports(tmp_path / "random")
    model = assemble_model(video, landmarks, tmp_path / "model")
    (tmp_path / "vae").rename(tmp_path / "vae-moved")  # the run's VAE is gone: the model folder has its own
    head = TalkingHeadModel.from_pretrained(model / "video_model")
    assert head.resolution == 32 and head.landmark_image_size == 32 and head.ddim.config.solver == "unipc"
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    landmark_images = torch.rand(1, 4, 3, 32, 32)
    z_sem, z_T = head.encode_reference(reference, landmark_images[:, 0])
    assert z_T.shape == (1, 1, 4, 16, 16)  # the latent of the reference, shared by the frames
    frames = head.generate(z_T, z_sem, landmark_images, landmark_images[:, 0])
    assert frames.shape == (1, 4, 3, 32, 32) and torch.isfinite(frames).all()


def test_random_crop_takes_one_window_of_the_whole_batch():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.manual_seed(0)
    crop = random_crop(images, 4)
    assert crop.shape == (2, 3, 4, 4)
    top, left = [int(v) for v in np.argwhere(images[0, 0].numpy() == float(crop[0, 0, 0, 0]))[0]]
    torch.testing.assert_close(crop, images[..., top:top + 4, left:left + 4])
    assert random_crop(images, None) is images and random_crop(images, 8) is images
