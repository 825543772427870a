"""Stage 0, `stage0.target=upsampler` (beyond the paper): train the face upsampler (models/face_upsampler.py).

Each training face at `resolution` (e.g. 128 px) is area-downsampled by `scale` to what a pixel-space model of
`resolution / scale` px makes, degraded the way generated frames differ from renders (a little blur and noise), and
the upsampler learns to give the face back: L1 + MSE, on random crops (it is fully convolutional). Its export is a
plain `face_upsampler/` folder that `assemble_model(..., upsampler=DIR)` puts into a model folder, and
`upsampler_metrics.json` records its PSNR against bicubic upsampling on clean inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from faceedittalker.errors import InputError
from faceedittalker.metrics.image import psnr
from faceedittalker.models.face_upsampler import FaceUpsampler
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.stages.stage0_autoencoder import random_crop
from faceedittalker.utils.files import write_json_atomic
from faceedittalker.utils.images import image_grid


def degrade(faces: torch.Tensor, max_blur: float, max_noise: float) -> torch.Tensor:
    """Per image a Gaussian blur of sigma ~ U(0, max_blur) px and noise of std ~ U(0, max_noise): generated frames
    are softer and grainier than renders, and an upsampler that only saw clean inputs would sharpen their noise."""
    batch = faces.shape[0]
    if max_blur > 0:
        sigma = torch.rand(batch, device=faces.device) * max_blur + 1e-3  # (B,)
        offsets = torch.arange(-2, 3, device=faces.device, dtype=faces.dtype)  # a 5-tap kernel covers sigma <= 1
        kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma[:, None] ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 5)
        channels = faces.shape[1]
        flat = faces.reshape(1, batch * channels, *faces.shape[-2:])  # one group per image channel
        taps = kernel.repeat_interleave(channels, 0)  # (B C, 5)
        flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), taps[:, None, None, :], groups=batch * channels)
        flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), taps[:, None, :, None], groups=batch * channels)
        faces = flat.reshape(faces.shape)
    if max_noise > 0:
        std = torch.rand(batch, 1, 1, 1, device=faces.device) * max_noise
        faces = faces + std * torch.randn_like(faces)
    return faces.clamp(-1, 1)


class UpsamplerStage(Stage):
    name = "stage0"

    def build_modules(self) -> StageModules:
        settings = OmegaConf.to_container(self.cfg.stage0.upsampler.model, resolve=True)
        upsampler = FaceUpsampler(**settings)
        if self.cfg.resolution % upsampler.scale:
            raise InputError(f"resolution={self.cfg.resolution} is not divisible by the upsampler's scale "
                             f"{upsampler.scale}")
        return StageModules(trainable={"face_upsampler": upsampler})

    def build_dataset(self) -> Dataset:
        self.dataset = instantiate(self.cfg.data)
        return self.dataset

    def low_resolution(self, faces: torch.Tensor, scale: int) -> torch.Tensor:
        return F.interpolate(faces, scale_factor=1 / scale, mode="area")  # (B, 3, R/s, R/s)

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        settings = self.cfg.stage0.upsampler
        upsampler = modules["face_upsampler"]
        scale = int(settings.model.scale)
        faces = random_crop(batch["image"], self.cfg.stage0.crop_size)  # (B, 3, c, c) in [-1, 1]
        small = degrade(self.low_resolution(faces, scale), settings.max_blur, settings.max_noise)  # (B, 3, c/s, c/s)
        restored = upsampler(small)  # (B, 3, c, c)
        return (restored - faces).abs().mean() + F.mse_loss(restored, faces)

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows of: input | bicubic from the downsampled input | the upsampler's."""
        upsampler = modules["face_upsampler"]
        faces = batch["image"]
        small = self.low_resolution(faces, upsampler.scale)
        return image_grid([faces, upsampler.bicubic(small).clamp(-1, 1), upsampler.upsample(small)])

    @torch.no_grad()
    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        """Record the PSNR of the upsampler and of bicubic on `stage0.scale_images` clean training faces."""
        upsampler = modules["face_upsampler"]
        was_training = upsampler.training
        upsampler.eval()
        count = min(int(self.cfg.stage0.scale_images), len(self.dataset))
        device = next(upsampler.parameters()).device
        faces = torch.stack([self.dataset[i]["image"] for i in range(count)]).to(device)
        small = self.low_resolution(faces, upsampler.scale)
        learned = upsampler.upsample(small)
        bicubic = upsampler.bicubic(small).clamp(-1, 1)
        upsampler.train(was_training)
        metrics = {"psnr_db": float(psnr(learned, faces).mean()), "bicubic_psnr_db": float(psnr(bicubic, faces).mean()),
                   "images": count, "scale": upsampler.scale, "resolution": int(faces.shape[-1])}  # fmt: skip
        write_json_atomic(directory / "upsampler_metrics.json", metrics)
