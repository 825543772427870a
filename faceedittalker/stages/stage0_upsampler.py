"""Stage 0, `stage0.target=upsampler` (beyond the paper): train the face upsampler (models/face_upsampler.py).

Each training face at `resolution` (e.g. 128 px) is area-downsampled by `scale` to what a pixel-space model of
`resolution / scale` px makes, degraded the way generated frames differ from renders (a little blur and noise), and
the upsampler learns to give the face back: L1 + MSE, on random crops (it is fully convolutional). Its export is a
plain `face_upsampler/` folder that `assemble_model(..., upsampler=DIR)` puts into a model folder, and
`upsampler_metrics.json` records its PSNR against bicubic upsampling on clean inputs.

Refinement (`experiment=tiny/upsampler_refine`): degraded renders only imitate generated frames. With
`stage0.upsampler.pairs` (a folder of `scripts/make_upsampler_pairs.py`: the video model's own frames and the
truth's crops) a `pairs_fraction` of every batch is such pairs, and `stage0.upsampler.init` starts from a trained
upsampler, so the upsampler learns to undo the video model's errors too (the mouth it draws blurred or half shut).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from faceedittalker.data.upsampler_pairs import load_upsampler_pairs
from faceedittalker.errors import InputError
from faceedittalker.metrics.image import psnr
from faceedittalker.models.face_upsampler import FaceUpsampler, area_downsample, row_span
from faceedittalker.pipeline import upsampler_folder
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
        options = self.cfg.stage0.upsampler
        if options.get("init"):  # its own architecture; `model` is ignored
            trained = FaceUpsampler.from_pretrained(upsampler_folder(options.init))
            settings = {k: v for k, v in trained.config.items() if not k.startswith("_")}
        else:
            trained, settings = None, OmegaConf.to_container(options.model, resolve=True)
        if options.get("back_projection") is not None:  # inference only: it travels in the export's config
            back_projection = OmegaConf.to_container(options.back_projection, resolve=True)
            unknown = set(back_projection) - {"steps", "factor", "rows"}
            if unknown:
                raise InputError(f"stage0.upsampler.back_projection has steps, factor and rows, not {sorted(unknown)}")
            settings.update({f"back_projection_{key}": value for key, value in back_projection.items()})
        try:
            upsampler = FaceUpsampler(**settings)
        except ValueError as error:  # a bad setting of `model` or `back_projection`: one line, not a traceback
            raise InputError(f"stage0.upsampler: {error}") from error
        if trained is not None:
            upsampler.load_state_dict(trained.state_dict())  # a fresh config: the export names no source path
        if self.cfg.resolution % upsampler.scale:
            raise InputError(f"resolution={self.cfg.resolution} is not divisible by the upsampler's scale "
                             f"{upsampler.scale}")
        self.scale, self.pairs = upsampler.scale, None
        if options.get("pairs"):
            low, high = load_upsampler_pairs(options.pairs)
            if high.shape[-1] != upsampler.scale * low.shape[-1]:
                raise InputError(f"the pairs in {options.pairs} are x{high.shape[-1] // low.shape[-1]}, the upsampler "
                                 f"x{upsampler.scale}")
            if not 0 < float(options.pairs_fraction) <= 1:
                raise InputError(f"stage0.upsampler.pairs_fraction is a share of the batch in (0, 1], got "
                                 f"{options.pairs_fraction}")
            crop = min(self.cfg.stage0.crop_size or self.cfg.resolution, self.cfg.resolution) // upsampler.scale
            if low.shape[-1] < crop:
                raise InputError(f"the pairs in {options.pairs} are {low.shape[-1]} px, smaller than the training "
                                 f"crops' {crop} px at the low resolution (lower stage0.crop_size)")
            rows = options.get("pairs_rows")
            if rows is not None:
                first, last = row_span(rows, low.shape[-2])
                if not 0 <= rows[0] < rows[1] <= 1 or last - first < crop:
                    raise InputError(f"stage0.upsampler.pairs_rows={list(rows)} must be [first, last] fractions of "
                                     f"the face holding a crop of {crop} of its {low.shape[-2]} rows")
            self.pairs = (low, high)
        return StageModules(trainable={"face_upsampler": upsampler})

    def build_dataset(self) -> Dataset:
        self.dataset = instantiate(self.cfg.data)
        return self.dataset

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        settings = self.cfg.stage0.upsampler
        upsampler = modules["face_upsampler"]
        scale = self.scale  # the upsampler's own (with `init`, not necessarily `model.scale`)
        faces = random_crop(batch["image"], self.cfg.stage0.crop_size)  # (B, 3, c, c) in [-1, 1]
        small = degrade(area_downsample(faces, scale), settings.max_blur, settings.max_noise)  # (B, 3, c/s, c/s)
        if self.pairs is not None:  # the first share of the batch: generated frames and their truth instead
            count = max(1, round(float(settings.pairs_fraction) * faces.shape[0]))
            generated, truth = self.pair_crops(count, faces.shape[-1], scale, settings.get("pairs_rows"))
            small = torch.cat([generated.to(small), small[count:]])
            faces = torch.cat([truth.to(faces), faces[count:]])
        restored = upsampler(small)  # (B, 3, c, c)
        return (restored - faces).abs().mean() + F.mse_loss(restored, faces)

    def pair_crops(self, count: int, size: int, scale: int, rows: Sequence[float] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` random pairs, one aligned random crop of them: (count, 3, size/s, size/s) generated and
        (count, 3, size, size) true faces in [-1, 1]; `rows` (first, last) as fractions of the face height keeps
        the crop inside those rows (build_modules checked that they hold it)."""
        low, high = self.pairs
        chosen = torch.randint(0, len(low), (count,))
        first, last = (0, low.shape[-2]) if rows is None else row_span(rows, low.shape[-2])
        side = size // scale  # in low-resolution pixels
        top = first + int(torch.randint(0, last - first - side + 1, ()))
        left = int(torch.randint(0, low.shape[-1] - side + 1, ()))
        generated = low[chosen, :, top:top + side, left:left + side]
        truth = high[chosen, :, scale * top:scale * (top + side), scale * left:scale * (left + side)]
        return generated.float() / 127.5 - 1, truth.float() / 127.5 - 1

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows of: input | bicubic from the downsampled input | the upsampler's."""
        upsampler = modules["face_upsampler"]
        faces = batch["image"]
        small = area_downsample(faces, upsampler.scale)
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
        small = area_downsample(faces, upsampler.scale)
        learned = upsampler.upsample(small)
        bicubic = upsampler.bicubic(small).clamp(-1, 1)
        if self.pairs is not None:  # its training pairs, for the record (not held out)
            low, high = (t[:count].to(device).float() / 127.5 - 1 for t in self.pairs)
            pair_metrics = {"pairs_psnr_db": float(psnr(upsampler.upsample(low), high).mean()),
                            "pairs_bicubic_psnr_db": float(psnr(upsampler.bicubic(low).clamp(-1, 1), high).mean())}
        upsampler.train(was_training)
        metrics = {"psnr_db": float(psnr(learned, faces).mean()), "bicubic_psnr_db": float(psnr(bicubic, faces).mean()),
                   "images": count, "scale": upsampler.scale, "resolution": int(faces.shape[-1])}  # fmt: skip
        if self.pairs is not None:
            metrics.update(pair_metrics)
        write_json_atomic(directory / "upsampler_metrics.json", metrics)
