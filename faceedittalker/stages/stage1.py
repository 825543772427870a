"""Stage 1, Alg. 1: joint training of the semantic encoder E_sem and the conditional denoiser eps_theta.

Loss (Eq. 11): || eps_theta(Z_t, t | z_sem = E_sem(x)) - eps ||^2 with Z_0 = E_img(x) (or its cached value);
`diffusion.prediction_type` / `diffusion.loss_weighting` swap the target (v, z0) and weight the timesteps;
`stage1.face_loss_weight` (beyond the paper, 1 = Eq. 11) weighs the error inside the inner-face ellipse of the
aligned crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from faceedittalker.errors import InputError
from faceedittalker.metrics.image import ellipse_mask
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.utils.images import image_grid


class Stage1(Stage):
    name = "stage1"

    def build_modules(self) -> StageModules:
        cfg = self.cfg
        face = cfg.stage1
        if face.face_loss_weight < 0:
            raise InputError(f"stage1.face_loss_weight must be >= 0, got {face.face_loss_weight}")
        if len(face.face_region) != 4 or min(face.face_region[2:]) <= 0:
            raise InputError(f"stage1.face_region must be [center_x, center_y, radius_x, radius_y] with positive "
                             f"radii, got {list(face.face_region)}")
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
        return self.diffusion.training_loss(lambda z_t, t: modules["unet"](z_t, t, z_sem), z0,
                                            pixel_weights=self.face_weights(z0.shape[-1], z0.device))

    def face_weights(self, size: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """(1, 1, size, size) loss weights: `stage1.face_loss_weight` inside the `stage1.face_region` ellipse, 1
        elsewhere (None at 1: Eq. 11 as written). Hair, skin and background cover most of a crop and dominate an
        unweighted MSE, so z_sem learns them first; glasses, cheeks, lips and eyes are a few percent of the pixels
        and get almost no gradient. Crops are aligned on the face, so one fixed ellipse covers the inner face."""
        weight = float(self.cfg.stage1.face_loss_weight)
        if weight == 1.0:
            return None
        cx, cy, rx, ry = (float(v) for v in self.cfg.stage1.face_region)
        mask = ellipse_mask(size, (cx, cy), (rx, ry)).to(device)  # (size, size)
        return (1.0 + (weight - 1.0) * mask.float())[None, None]

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
