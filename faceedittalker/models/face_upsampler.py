"""The face upsampler (beyond the paper): a learned x4 super-resolution of the generated face crops.

The paper decodes 64 x 64 latents into 512 px frames with the SD-VAE decoder. A CPU model of the synthetic world
diffuses at 32 px in pixel space instead, where its z_sem, edits and lips are best (README, "128 px"), and this
module is its decoder to a readable size, in the role of a cascade's super-resolution stage (Imagen, DeepFloyd IF):
the 32 px frame is the latent, area-downsampling the fixed encoder, and a VAE decoder's blocks (diffusers' `Decoder`)
learn the rest on the training faces (stage 0, `stage0.target=upsampler`). It predicts the residual over bicubic
upsampling, so an untrained one already returns a plain upscale. Deterministic: the same frame always gives the
same face, so a video does not flicker from it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.modeling_utils import ModelMixin


class FaceUpsampler(ModelMixin, ConfigMixin):
    """(B, 3, r, r) in [-1, 1] -> (B, 3, scale r, scale r) in [-1, 1]: bicubic + a learned residual."""

    @register_to_config
    def __init__(self, scale: int = 4, block_out_channels: tuple[int, ...] = (32, 64, 64), layers_per_block: int = 1,
                 norm_num_groups: int = 16, mid_block_add_attention: bool = False):
        super().__init__()
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

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """faces (B, 3, r, r) in [-1, 1] -> (B, 3, scale r, scale r), not clamped (training sees the raw output)."""
        return self.bicubic(faces) + self.decoder(faces)  # (B, 3, scale r, scale r)

    @torch.no_grad()
    def upsample(self, faces: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Inference: (B, 3, r, r) -> (B, 3, scale r, scale r) clamped to [-1, 1], in batches to bound memory."""
        dtype = next(self.parameters()).dtype
        return torch.cat([self(chunk.to(dtype)).clamp(-1, 1) for chunk in faces.split(batch_size)]).to(faces.dtype)

