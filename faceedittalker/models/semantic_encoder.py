"""E_sem, the semantic encoder (paper Sec. III-C; DiffAE's half-UNet): image -> z_sem in R^512.

DiffAE's encoder is the down path + middle of an ADM UNet without time input, followed by
GroupNorm -> SiLU -> global average pool -> 1x1 conv. Here the same structure is composed from diffusers'
VAE-encoder blocks (ResNet blocks without time embedding, optional self-attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import AttnDownEncoderBlock2D, DownEncoderBlock2D, UNetMidBlock2D
from torch import nn

from faceedittalker.models.layers import maybe_checkpoint


class SemanticEncoder(ModelMixin, ConfigMixin):
    """Half-UNet image encoder producing the semantic code z_sem (B, z_dim).

    `enable_gradient_checkpointing()` recomputes each down block in the backward pass (diffusers' encoder blocks
    have no flag of their own); the middle block checkpoints its ResNets itself (diffusers' `UNetMidBlock2D`)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 256,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4, 4),
        layers_per_block: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        z_dim: int = 512,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, kernel_size=3, padding=1)
        blocks = []
        channels, resolution = base_channels, image_size
        for level, mult in enumerate(channel_mult):
            out_channels = base_channels * mult
            is_last = level == len(channel_mult) - 1
            block_kwargs = dict(
                in_channels=channels,
                out_channels=out_channels,
                num_layers=layers_per_block,
                resnet_groups=norm_num_groups,
                add_downsample=not is_last,
                downsample_padding=1,
            )
            if resolution in attention_resolutions:
                blocks.append(AttnDownEncoderBlock2D(attention_head_dim=attention_head_dim, **block_kwargs))
            else:
                blocks.append(DownEncoderBlock2D(**block_kwargs))
            channels = out_channels
            resolution = resolution if is_last else resolution // 2
        self.down_blocks = nn.ModuleList(blocks)
        self.gradient_checkpointing = False
        self.mid_block = UNetMidBlock2D(
            in_channels=channels,
            temb_channels=None,
            resnet_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
        )
        # DiffAE's head: GN -> SiLU -> global average pool -> 1x1 conv.
        self.head = nn.Sequential(
            nn.GroupNorm(norm_num_groups, channels),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, z_dim, kernel_size=1),
            nn.Flatten(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> z_sem (B, z_dim)."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            # E_sem sees a fixed resolution (DiffAE: 256) whatever the generator's image size.
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        h = self.conv_in(images)  # (B, C, S, S)
        for block in self.down_blocks:
            h = maybe_checkpoint(self, block, h)
        h = self.mid_block(h, None)  # (B, C_last, S / 2^(L-1), ...)
        return self.head(h)  # (B, z_dim)
