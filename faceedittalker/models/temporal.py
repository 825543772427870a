"""Temporal layers of eps_theta (paper Sec. II-B, "a motion module ... that employs Temporal Self-Attention across
multiple resolutions with temporal position encoding"), AnimateDiff's motion module from diffusers.

Each layer attends over the frames of one video at every spatial position: GroupNorm -> Linear -> transformer
blocks with two temporal self-attentions (sinusoidal frame-position encoding) and a GEGLU feed-forward ->
Linear, added to its input. The output projection starts at zero, so inserting the layers into a stage-1 image
model leaves it unchanged until they learn something (AnimateDiff and AniPortrait do the same).
"""

from __future__ import annotations

import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn


class TemporalAttention(nn.Module):
    """Temporal self-attention over the frames of each video, residual, zero-initialised output."""

    def __init__(
        self, channels: int, num_heads: int = 8, max_frames: int = 32, norm_num_groups: int = 32, num_layers: int = 1
    ):
        super().__init__()
        heads = max(min(num_heads, channels // 8), 1)
        self.motion = AnimateDiffTransformer3D(
            num_attention_heads=heads,
            attention_head_dim=channels // heads,
            in_channels=channels,
            num_layers=num_layers,
            norm_num_groups=norm_num_groups,
            double_self_attention=True,
            positional_embeddings="sinusoidal",
            num_positional_embeddings=max_frames,
        )
        nn.init.zeros_(self.motion.proj_out.weight)
        nn.init.zeros_(self.motion.proj_out.bias)
        self.max_frames = max_frames

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        """h (B * F, C, H, W), frames of one video consecutive -> (B * F, C, H, W)."""
        if num_frames > self.max_frames:
            raise ValueError(
                f"{num_frames} frames at once; the temporal layers encode at most {self.max_frames} "
                "positions (denoise long videos in overlapping windows)"
            )
        return self.motion(h, num_frames=num_frames)  # the residual is added inside
