"""Stage 0 (beyond the paper): train E_img and its decoder, a small KL autoencoder, on the stage-1 images.

The paper diffuses in the latent space of Stable Diffusion's VAE, trained elsewhere on web images and frozen. Data
without such a VAE (the synthetic world) gets one in miniature here: diffusers' `AutoencoderKL`, the SD-VAE's own
architecture at a CPU width, trained on random crops (it is fully convolutional, as SD's VAE trained at 256 px
serves 512 px) with an L1 + MSE reconstruction of a posterior sample and SD's small KL weight. No LPIPS or GAN term:
there are no perceptual weights offline, and flat-shaded synthetic faces do not need them.

The export is a plain `AutoencoderKL` folder (config.json + safetensors) that `autoencoder=world_vae` (or
`autoencoder=sd_vae autoencoder.pretrained=DIR`) loads exactly like the SD-VAE. Its `scaling_factor` is set at
export so that the latents of the training images have unit standard deviation, the way SD's 0.18215 was chosen,
and `autoencoder_metrics.json` records the round-trip PSNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from faceedittalker.errors import InputError
from faceedittalker.metrics.image import psnr
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.utils.files import write_json_atomic
from faceedittalker.utils.images import image_grid


def build_small_vae(resolution: int, block_out_channels: list[int], layers_per_block: int = 1,
                    latent_channels: int = 4, norm_num_groups: int = 16) -> AutoencoderKL:
    """An SD-style `AutoencoderKL` with len(block_out_channels) levels: downsampling 2 ** (levels - 1)."""
    levels = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
        block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
        latent_channels=latent_channels, norm_num_groups=norm_num_groups, sample_size=resolution,
    )


class AutoencoderStage(Stage):
    name = "stage0"

    def build_modules(self) -> StageModules:
        s0 = self.cfg.stage0
        if self.cfg.resolution % (2 ** (len(s0.vae.block_out_channels) - 1)):
            raise InputError(f"resolution={self.cfg.resolution} is not divisible by the autoencoder's downsampling")
        vae = build_small_vae(self.cfg.resolution, **OmegaConf.to_container(s0.vae, resolve=True))
        return StageModules(trainable={"autoencoder": vae})

    def build_dataset(self) -> Dataset:
        self.dataset = instantiate(self.cfg.data)
        return self.dataset

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        s0 = self.cfg.stage0
        images = random_crop(batch["image"], s0.crop_size)  # (B, 3, c, c) in [-1, 1]
        posterior = modules["autoencoder"].encode(images).latent_dist
        recon = modules["autoencoder"].decode(posterior.sample()).sample  # (B, 3, c, c)
        reconstruction = (recon - images).abs().mean() + F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()  # per pixel, as the reconstruction terms
        return reconstruction + s0.kl_weight * kl

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows of: input | round trip through the posterior mean (what the diffusion stages see)."""
        vae = modules["autoencoder"]
        images = batch["image"]
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample.clamp(-1, 1)
        return image_grid([images, recon])

    @torch.no_grad()
    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        """Set `scaling_factor` to 1 / std of the training latents in the exported config (the trainer has written the
        weights already) and record the round-trip PSNR."""
        vae = modules["autoencoder"]
        was_training = vae.training
        vae.eval()
        count = min(int(self.cfg.stage0.scale_images), len(self.dataset))
        device = next(vae.parameters()).device
        images = torch.stack([self.dataset[i]["image"] for i in range(count)]).to(device)
        means, recons = [], []
        for chunk in images.split(16):
            mean = vae.encode(chunk).latent_dist.mean  # (b, C, R/f, R/f)
            means.append(mean)
            recons.append(vae.decode(mean).sample.clamp(-1, 1))
        vae.train(was_training)
        latents = torch.cat(means)
        scaling_factor = float(1.0 / latents.std().clamp_min(1e-6))
        vae.register_to_config(scaling_factor=scaling_factor)
        vae.save_config(directory / "autoencoder")
        metrics = {"round_trip_psnr_db": float(psnr(torch.cat(recons), images).mean()), "images": count,
                   "scaling_factor": scaling_factor, "latent_mean": float(latents.mean()),
                   "latent_shape": list(latents.shape[1:])}
        write_json_atomic(directory / "autoencoder_metrics.json", metrics)


def random_crop(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """One random size x size crop of the whole batch (B, C, H, W); the batch itself when size is None or H."""
    height, width = images.shape[-2:]
    if size is None or size >= min(height, width):
        return images
    top = int(torch.randint(0, height - size + 1, ()))
    left = int(torch.randint(0, width - size + 1, ()))
    return images[..., top:top + size, left:left + size]
