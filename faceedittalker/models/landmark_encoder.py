"""E_ldm, the landmark feature extractor (paper Eq. 8-9, Table V): landmark images L^{1:T} and the reference
landmark image l_ref -> landmark features F^{1:T} for the denoiser.

    F  = head(stem(L))                          concatenated with Z_t: K = Concat(F, Z_t)            (Eq. 9)
    R_l = zero-conv(pyramid_l(stem(L)))         one residual per denoiser resolution level ("multi-scale")
    pyramid_l <- cross-attention to pyramid_l(stem(l_ref))                      ("cross-attention", Table V IV)

The three variants of Table V are configurations of this one class:
    II  multi-layer convolution:  `residual_channels=()`                  (only F, through the input)
    III multi-scale:              `residual_channels=unet.residual_channels`, `reference_cross_attention=False`
    IV  multi-scale + cross-attn: `residual_channels=unet.residual_channels`, `reference_cross_attention=True`

The stem follows AniPortrait's pose guider (3 -> 16 -> 32 -> 64 -> 128 channels with stride-2 convolutions down
to the latent size). Unlike AniPortrait, whose "reference pose" attention has no reference input (its
cross_attention_dim is None, so it is self-attention), the frames' features here really attend to the
reference landmarks' features, at every level no larger than `cross_attention_max_size`.

Zero initialisation: the denoiser's conv_in weights for F start at zero (`ConditionalUNet`), so F's head here
starts random (two zero factors in a row would block each other's gradient); the residual projections and the
cross-attention outputs start at zero, so a fresh E_ldm leaves an inflated stage-1 model unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from faceedittalker.models.layers import group_count, maybe_checkpoint


@dataclass
class LandmarkFeatures:
    """What eps_theta takes from E_ldm: `cond` (B, F, C_F, h, w) for K = Concat(F, Z_t), `residuals` one
    (B * F, C_l, h_l, w_l) per resolution level (empty for the single-scale variant)."""

    cond: torch.Tensor
    residuals: list[torch.Tensor]


class PyramidLevel(nn.Module):
    """One level of the landmark feature pyramid: optional stride-2 downsampling, then a ResNet block."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, groups: int):
        super().__init__()
        self.down = (
            Downsample2D(in_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")
            if downsample
            else None
        )
        width = out_channels if downsample else in_channels
        self.resnet = ResnetBlock2D(in_channels=width, out_channels=out_channels, temb_channels=None, groups=groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            h = self.down(h)
        return self.resnet(h, None)


class LandmarkEncoder(ModelMixin, ConfigMixin):
    """E_ldm(L^{1:T}, l_ref) -> F^{1:T} (+ multi-scale residuals).

    `enable_gradient_checkpointing()` recomputes the stem (its full-resolution activations over every frame are
    E_ldm's largest) and each pyramid level in the backward pass; the reference cross-attention checkpoints its
    transformer blocks itself (diffusers' `Transformer2DModel`)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_size: int = 512,
        latent_size: int = 64,
        in_channels: int = 3,
        stem_channels: tuple[int, ...] = (16, 32, 64, 128),
        cond_channels: int = 4,
        residual_channels: tuple[int, ...] = (),
        reference_cross_attention: bool = True,
        cross_attention_max_size: int = 32,
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        num_down = math.log2(image_size / latent_size)
        if num_down < 0 or num_down != int(num_down):
            raise ValueError(f"landmark images of {image_size} px cannot be reduced to {latent_size} px by halving")
        if reference_cross_attention and not residual_channels:
            raise ValueError("reference cross-attention works on the multi-scale features: set residual_channels")

        # Stem: landmark image -> features at the latent size (AniPortrait's pose guider).
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem_channels[0], 3, padding=1), nn.SiLU()]
        channels = stem_channels[0]
        for i in range(int(num_down)):
            out = stem_channels[min(i + 1, len(stem_channels) - 1)]
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(channels, out, 3, stride=2, padding=1),
                nn.SiLU(),
            ]
            channels = out
        layers += [nn.Conv2d(channels, stem_channels[-1], 3, padding=1), nn.SiLU()]
        self.stem = nn.Sequential(*layers)
        channels = stem_channels[-1]
        self.head = nn.Conv2d(channels, cond_channels, 3, padding=1)  # F of Eq. 9
        self.gradient_checkpointing = False

        # Pyramid: one feature map per denoiser level, each projected by a zero conv to that level's width.
        self.levels = nn.ModuleList()
        self.cross_attention = nn.ModuleList()
        self.residual_out = nn.ModuleList()
        size = latent_size
        for level, width in enumerate(residual_channels):
            size = size // 2 if level > 0 else size
            self.levels.append(PyramidLevel(channels, width, level > 0, group_count(width, norm_num_groups)))
            channels = width
            attend = reference_cross_attention and size <= cross_attention_max_size
            self.cross_attention.append(
                self._reference_attention(width, attention_head_dim, norm_num_groups) if attend else nn.Identity()
            )
            projection = nn.Conv2d(width, width, 1)
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
            self.residual_out.append(projection)

    @staticmethod
    def _reference_attention(width: int, head_dim: int, groups: int) -> Transformer2DModel:
        """Frame tokens attend to the reference landmark tokens; the output projection starts at zero."""
        heads = max(width // head_dim, 1)
        block = Transformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=width // heads,
            in_channels=width,
            norm_num_groups=group_count(width, groups),
            cross_attention_dim=width,
            use_linear_projection=True,
        )
        nn.init.zeros_(block.proj_out.weight)
        nn.init.zeros_(block.proj_out.bias)
        return block

    def forward(self, landmark_images: torch.Tensor, reference_image: torch.Tensor | None = None) -> LandmarkFeatures:
        """landmark_images (B, F, 3, S, S) in [0, 1]; reference_image (B, 3, S, S), the reference's own
        landmark image (needed by the cross-attention variant)."""
        batch, num_frames = landmark_images.shape[:2]
        h = maybe_checkpoint(self, self.stem, landmark_images.flatten(0, 1))  # (B * F, C_stem, h, w)
        cond = self.head(h).unflatten(0, (batch, num_frames))  # (B, F, C_F, h, w)
        needs_reference = any(not isinstance(a, nn.Identity) for a in self.cross_attention)
        if needs_reference and reference_image is None:
            raise ValueError("this landmark encoder attends to the reference landmarks: pass reference_image")
        ref = maybe_checkpoint(self, self.stem, reference_image) if needs_reference else None  # (B, C_stem, h, w)
        residuals = []
        for level, attention, projection in zip(self.levels, self.cross_attention, self.residual_out, strict=True):
            h = maybe_checkpoint(self, level, h)  # (B * F, C_l, h_l, w_l)
            if ref is not None:
                ref = maybe_checkpoint(self, level, ref)  # (B, C_l, h_l, w_l)
            if not isinstance(attention, nn.Identity):
                tokens = ref.flatten(2).transpose(1, 2).repeat_interleave(num_frames, dim=0)  # (B * F, hw, C_l)
                h = attention(h, encoder_hidden_states=tokens, return_dict=False)[0]
            residuals.append(projection(h))
        return LandmarkFeatures(cond, residuals)
