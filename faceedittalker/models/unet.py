"""eps_theta, the conditional denoiser (paper Sec. III-D, Eq. 10-13), composed from diffusers blocks.

Conditioning, as in the paper:
- z_sem by cross-attention: z_sem is projected to `z_tokens` tokens (a single token would make attention a
  constant: softmax over one key is 1), attended to by every spatial transformer;
- optionally DiffAE's AdaGN scale: every ResNet block multiplies its normalised activations by (1 + W z_sem);
- the input feature K = Concat(F, Z_t) (Eq. 9): `cond_channels` extra input channels whose conv_in weights
  start at zero, so a stage-1 model is unchanged until the landmark features F learn to matter.

diffusers' stock UNets cannot carry a vector condition through DiffAE's scale-only modulation, hence this
composition of `ResnetBlock2D`, `Transformer2DModel`, `Downsample2D`, `Upsample2D` and the timestep embeddings.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------


class ConditionalResnetBlock2D(ResnetBlock2D):
    """ADM ResNet block: time scale-shift, then (optionally) DiffAE's z_sem scale.

    h = GN(h) * (1 + t_scale) + t_shift;  h = h * (1 + z_scale)   (DiffAE Eq. 'AdaGN')
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, z_channels: int | None,
                 dropout: float, groups: int):
        super().__init__(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels,
                         dropout=dropout, groups=groups, time_embedding_norm="scale_shift")
        self.z_scale_proj = nn.Linear(z_channels, out_channels) if z_channels else None
        nn.init.zeros_(self.conv2.weight)  # ADM: each residual branch starts as the identity.
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, z_sem: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))  # (B, C_out, H, W)
        t_scale, t_shift = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + t_scale) + t_shift
        if self.z_scale_proj is not None:
            h = h * (1 + self.z_scale_proj(z_sem)[:, :, None, None])
        h = self.conv2(self.dropout(self.nonlinearity(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class UNetLayer(nn.Module):
    """One ResNet block, an optional spatial transformer (self-attention + cross-attention to the z_sem
    tokens) and an optional upsampler."""

    def __init__(self, resnet: ConditionalResnetBlock2D, attention: Transformer2DModel | None,
                 upsample: Upsample2D | None = None):
        super().__init__()
        self.resnet = resnet
        self.attention = attention
        self.upsample = upsample

    def forward(self, h: torch.Tensor, temb: torch.Tensor, z_sem: torch.Tensor | None,
                z_tokens: torch.Tensor | None) -> torch.Tensor:
        h = self.resnet(h, temb, z_sem)
        if self.attention is not None:
            h = self.attention(h, encoder_hidden_states=z_tokens, return_dict=False)[0]
        if self.upsample is not None:
            h = self.upsample(h)
        return h


# ---------------------------------------------------------------------------------------------------------
# Core model
# ---------------------------------------------------------------------------------------------------------


class ConditionalUNet(ModelMixin, ConfigMixin):
    """eps_theta(z_t, t | z_sem, F): predicts the noise of a latent (or pixel) image."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        cond_channels: int = 0,
        sample_size: int = 64,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 3, 4),
        layers_per_block: int = 2,
        attention_resolutions: tuple[int, ...] = (32, 16, 8),
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        dropout: float = 0.1,
        time_embed_dim: int = 512,
        z_dim: int = 512,
        zsem_cross_attention: bool = True,
        z_tokens: int = 4,
        cross_attention_dim: int = 512,
        zsem_adagn: bool = False,
    ):
        super().__init__()
        if not (zsem_cross_attention or zsem_adagn):
            raise ValueError("z_sem needs a way in: enable zsem_cross_attention, zsem_adagn or both")
        self.time_proj = Timesteps(base_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(base_channels, time_embed_dim)
        self.z_to_tokens = nn.Linear(z_dim, z_tokens * cross_attention_dim) if zsem_cross_attention else None

        self.conv_in = nn.Conv2d(in_channels + cond_channels, base_channels, kernel_size=3, padding=1)
        # K = Concat(F, Z_t): the F channels start at zero so they cannot disturb a pretrained model.
        nn.init.zeros_(self.conv_in.weight[:, in_channels:])

        def resnet(c_in: int, c_out: int) -> ConditionalResnetBlock2D:
            return ConditionalResnetBlock2D(c_in, c_out, time_embed_dim, z_dim if zsem_adagn else None,
                                            dropout, norm_num_groups)

        def transformer(channels: int) -> Transformer2DModel:
            return Transformer2DModel(
                num_attention_heads=max(channels // attention_head_dim, 1),
                attention_head_dim=min(attention_head_dim, channels),
                in_channels=channels,
                norm_num_groups=norm_num_groups,
                cross_attention_dim=cross_attention_dim if zsem_cross_attention else None,
                use_linear_projection=True,
            )

        def attention(channels: int, resolution: int) -> Transformer2DModel | None:
            return transformer(channels) if resolution in attention_resolutions else None

        # Down path: every layer's output is kept as a skip connection (ADM layout).
        self.down_layers = nn.ModuleList()
        skip_channels = [base_channels]
        channels, resolution = base_channels, sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(layers_per_block):
                self.down_layers.append(UNetLayer(resnet(channels, base_channels * mult),
                                                  attention(base_channels * mult, resolution)))
                channels = base_channels * mult
                skip_channels.append(channels)
            if level < len(channel_mult) - 1:
                self.down_layers.append(Downsample2D(channels, use_conv=True, padding=1, name="op"))
                skip_channels.append(channels)
                resolution //= 2

        self.mid_layers = nn.ModuleList([
            UNetLayer(resnet(channels, channels), transformer(channels)),  # the middle always attends (ADM)
            UNetLayer(resnet(channels, channels), None),
        ])

        # Up path: each layer consumes one skip; the last layer of a level upsamples.
        self.up_layers = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(layers_per_block + 1):
                out = base_channels * mult
                upsample = Upsample2D(out, use_conv=True) if (level > 0 and i == layers_per_block) else None
                self.up_layers.append(UNetLayer(resnet(channels + skip_channels.pop(), out),
                                                attention(out, resolution), upsample))
                channels = out
            if level > 0:
                resolution *= 2

        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int, z_sem: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """sample (B, C, H, W) = Z_t; timestep (B,) or scalar; z_sem (B, Z); cond (B, C_F, H, W) = F."""
        batch = sample.shape[0]
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))  # (B, E)
        z_sem = z_sem.to(sample.dtype)
        z_tokens = None
        if self.z_to_tokens is not None:
            z_tokens = self.z_to_tokens(z_sem).view(batch, self.config.z_tokens, -1)  # (B, N_tok, D)
        z_scale = z_sem if self.config.zsem_adagn else None

        if self.config.cond_channels:
            if cond is None:
                raise ValueError(f"this denoiser expects {self.config.cond_channels} landmark-feature channels")
            sample = torch.cat([sample, cond.to(sample.dtype)], dim=1)  # K = Concat(Z_t, F)
        h = self.conv_in(sample)  # (B, C0, H, W)
        skips = [h]
        for layer in self.down_layers:
            h = layer(h) if isinstance(layer, Downsample2D) else layer(h, temb, z_scale, z_tokens)
            skips.append(h)
        for layer in self.mid_layers:
            h = layer(h, temb, z_scale, z_tokens)  # (B, C_last, H / 2^(L-1), W / 2^(L-1))
        for layer in self.up_layers:
            h = layer(torch.cat([h, skips.pop()], dim=1), temb, z_scale, z_tokens)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))  # (B, C_out, H, W)

