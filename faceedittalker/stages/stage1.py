"""Stage 1, Alg. 1: joint training of the semantic encoder E_sem and the conditional denoiser eps_theta.

Loss (Eq. 11): || eps_theta(Z_t, t | z_sem = E_sem(x)) - eps ||^2 with Z_0 = E_img(x) (or its cached value);
`diffusion.prediction_type` / `diffusion.loss_weighting` swap the target (v, z0) and weight the timesteps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.utils.images import image_grid


class Stage1(Stage):
    name = "stage1"

    def build_modules(self) -> StageModules:
        cfg = self.cfg
        self.diffusion = instantiate(cfg.diffusion, _convert_="all")
        autoencoder = instantiate(cfg.autoencoder, _convert_="all")
        semantic_encoder = instantiate(cfg.semantic_encoder, _convert_="all")
        # The denoiser's input/output follow E_img: 4 x R/8 x R/8 for the SD-VAE, 3 x R x R in pixel space.
        unet = instantiate(cfg.unet, _convert_="all", in_channels=autoencoder.latent_channels,
                           out_channels=autoencoder.latent_channels,
                           sample_size=cfg.resolution // autoencoder.downsample_factor,
                           z_dim=semantic_encoder.config.z_dim)
        return StageModules(trainable={"semantic_encoder": semantic_encoder, "unet": unet},
                            frozen={"autoencoder": autoencoder})

    def build_dataset(self):
        return instantiate(self.cfg.data)

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        images = batch["image"]  # (B, 3, R, R) in [-1, 1]
        z0 = batch["latent"] if "latent" in batch else modules["autoencoder"].encode(images)  # (B, C, h, w)
        z_sem = modules["semantic_encoder"](images)  # (B, Z)
        return self.diffusion.training_loss(lambda z_t, t: modules["unet"](z_t, t, z_sem), z0)

    def feature_space(self, modules: dict[str, nn.Module]) -> ImageFeatureSpace:
        steps = self.cfg.sampling
        return ImageFeatureSpace(modules["autoencoder"], modules["semantic_encoder"], modules["unet"],
                                 self.diffusion, self.cfg.resolution, steps.sample_steps, steps.invert_steps)

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows of: input | reconstruction from the inverted Z_T | decode of random noise with the same z_sem."""
        space = self.feature_space(modules)
        images = batch["image"]
        z_sem = space.encode_semantic(images)
        recon = space.decode(space.encode_stochastic(images, z_sem), z_sem)
        noise = torch.randn(space.latent_shape(len(images)), device=images.device,
                            generator=torch.Generator(images.device).manual_seed(0))
        random_decode = space.decode(noise, z_sem)
        return image_grid([images, recon, random_decode])

    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        self.feature_space(modules).save_config(directory)
