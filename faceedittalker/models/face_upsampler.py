"""The face upsampler (beyond the paper): a learned x4 super-resolution of the generated face crops.

The paper decodes 64 x 64 latents into 512 px frames with the SD-VAE decoder. A CPU model of the synthetic world
diffuses at 32 px in pixel space instead, where its z_sem, edits and lips are best (README, "128 px"), and this
module is its decoder to a readable size, in the role of a cascade's super-resolution stage (Imagen, DeepFloyd IF):
the 32 px frame is the latent, area-downsampling the fixed encoder, and a VAE decoder's blocks (diffusers' `Decoder`)
learn the rest on the training faces (stage 0, `stage0.target=upsampler`). It predicts the residual over bicubic
upsampling, so an untrained one already returns a plain upscale. Deterministic: the same frame always gives the
same face, so a video does not flicker from it.

`back_projection_steps` (inference only) makes the decoded face consistent with its input: k rounds of iterative
back-projection (Irani & Peleg 1991), each adding the bicubic upscale of (input - area-downsampled output), so the
output downsampled is the face the denoiser drew. An upsampler refined on a model's own frames can otherwise
"clean" what it was not trained on, such as an edit's faint glasses (README, "Dec 7, evening").
`back_projection_factor` checks that consistency at 1 / factor of the input's size (2: 16 px for a 32 px face), so
the denoiser's pixel grain, which the refined upsampler rightly removes, is not put back; `back_projection_rows`
limits it to rows of the face (the refined upsampler's pairs cover the lower half, where it may correct the input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.modeling_utils import ModelMixin


def area_downsample(faces: torch.Tensor, scale: int) -> torch.Tensor:
    """The fixed encoder a face upsampler inverts: area-downsampling, (B, 3, s r, s r) -> (B, 3, r, r)."""
    return F.interpolate(faces, scale_factor=1 / scale, mode="area")


def row_span(rows: Sequence[float], height: int) -> tuple[int, int]:
    """[first, last] fractions of a face's height -> its rows first..last (exclusive), in pixels."""
    return round(rows[0] * height), round(rows[1] * height)


class FaceUpsampler(ModelMixin, ConfigMixin):
    """(B, 3, r, r) in [-1, 1] -> (B, 3, scale r, scale r) in [-1, 1]: bicubic + a learned residual."""

    @register_to_config
    def __init__(self, scale: int = 4, block_out_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1,
                 norm_num_groups: int = 16, mid_block_add_attention: bool = False, back_projection_steps: int = 0,
                 back_projection_rows: tuple[float, float] | None = None, back_projection_factor: int = 1):
        super().__init__()
        if back_projection_steps < 0:
            raise ValueError(f"back_projection_steps must be >= 0, got {back_projection_steps}")
        if back_projection_factor < 1:
            raise ValueError(f"back_projection_factor must be >= 1, got {back_projection_factor}")
        if back_projection_rows is not None and not 0 <= back_projection_rows[0] < back_projection_rows[1] <= 1:
            raise ValueError(f"back_projection_rows must be [first, last] fractions of the face's height, got "
                             f"{list(back_projection_rows)}")
        levels = len(block_out_channels)
        if scale < 2 or 2 ** (levels - 1) != scale:
            raise ValueError(f"scale {scale} needs log2(scale) + 1 = {int(math.log2(max(scale, 1))) + 1} levels of "
                             f"block_out_channels, got {levels}")
        # The VAE decoder of stage 0 with the 3-channel frame as its latent: ResNet blocks at 1x, 2x, 4x.
        self.decoder = Decoder(in_channels=3, out_channels=3, up_block_types=("UpDecoderBlock2D",) * levels,
                               block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                               norm_num_groups=norm_num_groups, mid_block_add_attention=mid_block_add_attention)
        # Start as plain bicubic: the residual's last convolution begins at zero.
        torch.nn.init.zeros_(self.decoder.conv_out.weight)
        torch.nn.init.zeros_(self.decoder.conv_out.bias)

    @property
    def scale(self) -> int:
        return int(self.config.scale)

    def bicubic(self, faces: torch.Tensor) -> torch.Tensor:
        """The baseline the residual is added to: (B, 3, r, r) -> (B, 3, scale r, scale r), not clamped."""
        return F.interpolate(faces, scale_factor=self.scale, mode="bicubic", align_corners=False)

    @property
    def back_projection(self) -> dict:
        """The decoding's back-projection as stage 0's config names it: {steps, factor, rows} (rows: None or a list)."""
        rows = self.config.back_projection_rows
        return {"steps": int(self.config.back_projection_steps), "factor": int(self.config.back_projection_factor),
                "rows": None if rows is None else [float(r) for r in rows]}

    def back_project(self, faces: torch.Tensor, upsampled: torch.Tensor) -> torch.Tensor:
        """`back_projection_steps` rounds pulling `upsampled` (B, 3, s r, s r) towards downsample(.) == faces at
        r / `back_projection_factor`, in the rows `back_projection_rows` of the face (fractions; None: all)."""
        steps, factor = int(self.config.back_projection_steps), int(self.config.back_projection_factor)
        if not steps:
            return upsampled
        target = area_downsample(faces, factor) if factor > 1 else faces
        rows = torch.ones(target.shape[-2], 1, dtype=faces.dtype, device=faces.device)  # (r, 1)
        if self.config.back_projection_rows is not None:
            first, last = row_span(self.config.back_projection_rows, target.shape[-2])
            rows.zero_()[first:last] = 1  # the bicubic upscale softens the edge over a few pixels
        for _ in range(steps):
            residual = rows * (target - area_downsample(upsampled, self.scale * factor))
            upsampled = upsampled + F.interpolate(residual, scale_factor=self.scale * factor, mode="bicubic",
                                                  align_corners=False)
        return upsampled

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """faces (B, 3, r, r) in [-1, 1] -> (B, 3, scale r, scale r), not clamped (training sees the raw output)."""
        return self.bicubic(faces) + self.decoder(faces)  # (B, 3, scale r, scale r)

    @torch.no_grad()
    def upsample(self, faces: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Inference: (B, 3, r, r) -> (B, 3, scale r, scale r) clamped to [-1, 1], in batches to bound memory."""
        dtype = next(self.parameters()).dtype
        chunks = [chunk.to(dtype) for chunk in faces.split(batch_size)]
        return torch.cat([self.back_project(chunk, self(chunk)).clamp(-1, 1) for chunk in chunks]).to(faces.dtype)

