"""eps_theta, the conditional denoiser (paper Sec. III-D, Eq. 10-13), composed from diffusers blocks.

Conditioning, as in the paper:
- z_sem by cross-attention: z_sem is projected to `z_tokens` tokens (a single token would make attention a
  constant: softmax over one key is 1), attended to by every spatial transformer;
- optionally DiffAE's AdaGN scale: every ResNet block multiplies its normalised activations by (1 + W z_sem);
- the input feature K = Concat(F, Z_t) (Eq. 9): `cond_channels` extra input channels whose conv_in weights
  start at zero, so a stage-1 model is unchanged until the landmark features F learn to matter;
- multi-scale landmark features (Sec. III-D, "multiscale feature fusion"): optional residuals added to the
  hidden state at the start of every resolution level (after conv_in, after each downsampler), as
  AniPortrait's pose guider does; E_ldm zero-initialises them.

One class serves images (stage 1: `sample` (B, C, H, W)) and videos (stage 3: `sample` (B, F, C, H, W) with
`temporal_layers=True`: AnimateDiff-style temporal self-attention after every layer at every resolution).
`ConditionalUNet.inflate` turns a stage-1 image model into the stage-3 video model with the new parts at zero.

diffusers' stock UNets cannot carry a vector condition through DiffAE's scale-only modulation, hence this
composition of `ResnetBlock2D`, `Transformer2DModel`, `Downsample2D`, `Upsample2D` and the timestep embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from faceedittalker.models.layers import maybe_checkpoint
from faceedittalker.models.temporal import TemporalAttention

# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------


class ConditionalResnetBlock2D(ResnetBlock2D):
    """ADM ResNet block: time scale-shift, then (optionally) DiffAE's z_sem scale.

    h = GN(h) * (1 + t_scale) + t_shift;  h = h * (1 + z_scale)   (DiffAE Eq. 'AdaGN')
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        z_channels: int | None,
        dropout: float,
        groups: int,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            temb_channels=temb_channels,
            dropout=dropout,
            groups=groups,
            time_embedding_norm="scale_shift",
        )
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
    tokens), optional temporal self-attention (videos) and an optional upsampler.

    With `gradient_checkpointing` (set by `ConditionalUNet.enable_gradient_checkpointing`) the ResNet block and the
    temporal layer are recomputed in the backward pass, as diffusers' own blocks do with their ResNets; the spatial
    transformer checkpoints its blocks itself (diffusers' `Transformer2DModel` gets the same flag), so nothing is
    checkpointed twice."""

    def __init__(
        self,
        resnet: ConditionalResnetBlock2D,
        attention: Transformer2DModel | None,
        upsample: Upsample2D | None = None,
        temporal: TemporalAttention | None = None,
    ):
        super().__init__()
        self.resnet = resnet
        self.attention = attention
        self.temporal = temporal
        self.upsample = upsample
        self.gradient_checkpointing = False

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        z_sem: torch.Tensor | None,
        z_tokens: torch.Tensor | None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        h = maybe_checkpoint(self, self.resnet, h, temb, z_sem)
        if self.attention is not None:
            h = self.attention(h, encoder_hidden_states=z_tokens, return_dict=False)[0]
        if self.temporal is not None:
            h = maybe_checkpoint(self, self.temporal, h, num_frames)
        if self.upsample is not None:
            h = self.upsample(h)
        return h


# ---------------------------------------------------------------------------------------------------------
# Core model
# ---------------------------------------------------------------------------------------------------------


class ConditionalUNet(ModelMixin, ConfigMixin):
    """eps_theta(z_t, t | z_sem, F): predicts the noise of a latent (or pixel) image."""

    _supports_gradient_checkpointing = True  # diffusers: `enable_gradient_checkpointing()` reaches every UNetLayer

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
        temporal_layers: bool = False,
        temporal_heads: int = 8,
        temporal_max_frames: int = 32,
        temporal_resolutions: tuple[int, ...] | None = None,
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
            return ConditionalResnetBlock2D(
                c_in, c_out, time_embed_dim, z_dim if zsem_adagn else None, dropout, norm_num_groups
            )

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

        def temporal(channels: int, resolution: int) -> TemporalAttention | None:
            """Temporal layers at every resolution (the paper), or only at `temporal_resolutions`."""
            if not temporal_layers or (temporal_resolutions is not None and resolution not in temporal_resolutions):
                return None
            return TemporalAttention(channels, temporal_heads, temporal_max_frames, norm_num_groups)

        # Down path: every layer's output is kept as a skip connection (ADM layout).
        self.down_layers = nn.ModuleList()
        skip_channels = [base_channels]
        channels, resolution = base_channels, sample_size
        for level, mult in enumerate(channel_mult):
            for _ in range(layers_per_block):
                self.down_layers.append(
                    UNetLayer(
                        resnet(channels, base_channels * mult),
                        attention(base_channels * mult, resolution),
                        temporal=temporal(base_channels * mult, resolution),
                    )
                )
                channels = base_channels * mult
                skip_channels.append(channels)
            if level < len(channel_mult) - 1:
                self.down_layers.append(Downsample2D(channels, use_conv=True, padding=1, name="op"))
                skip_channels.append(channels)
                resolution //= 2

        self.mid_layers = nn.ModuleList(
            [
                UNetLayer(
                    resnet(channels, channels), transformer(channels), temporal=temporal(channels, resolution)
                ),  # ADM
                UNetLayer(resnet(channels, channels), None),
            ]
        )

        # Up path: each layer consumes one skip; the last layer of a level upsamples.
        self.up_layers = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(layers_per_block + 1):
                out = base_channels * mult
                upsample = Upsample2D(out, use_conv=True) if (level > 0 and i == layers_per_block) else None
                self.up_layers.append(
                    UNetLayer(
                        resnet(channels + skip_channels.pop(), out),
                        attention(out, resolution),
                        upsample,
                        temporal(out, resolution),
                    )
                )
                channels = out
            if level > 0:
                resolution *= 2

        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def residual_channels(self) -> list[int]:
        """Channels of the hidden state at the start of each resolution level, where multi-scale landmark
        residuals are added: after conv_in, then after each downsampler."""
        base, mult = self.config.base_channels, self.config.channel_mult
        return [base] + [base * m for m in mult[:-1]]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        z_sem: torch.Tensor,
        cond: torch.Tensor | None = None,
        cond_residuals: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """eps for Z_t.

        Images: sample (B, C, H, W), z_sem (B, Z), cond (B, C_F, H, W) = F.
        Videos: sample (B, F, C, H, W), z_sem (B, Z) shared by the frames or (B, F, Z) one per frame (an edit
        that changes over time), cond (B, F, C_F, H, W).
        timestep: scalar or (B,). cond_residuals: one (B[*F], C_l, H_l, W_l) per level (`residual_channels`).
        """
        video = sample.dim() == 5
        batch, num_frames = sample.shape[0], (sample.shape[1] if video else 1)
        if video:
            sample = sample.flatten(0, 1)  # (B * F, C, H, W), the frames of a video consecutive
            cond = cond.flatten(0, 1) if cond is not None else None
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))  # (B, E)
        temb = temb.repeat_interleave(num_frames, dim=0)  # (B * F, E)
        if video and z_sem.dim() == 3:
            z_sem = z_sem.to(sample.dtype).flatten(0, 1)  # (B * F, Z), one code per frame
        else:
            z_sem = z_sem.to(sample.dtype).repeat_interleave(num_frames, dim=0)  # (B * F, Z)
        z_tokens = None
        if self.z_to_tokens is not None:
            z_tokens = self.z_to_tokens(z_sem).view(len(z_sem), self.config.z_tokens, -1)  # (B * F, N_tok, D)
        z_scale = z_sem if self.config.zsem_adagn else None

        if self.config.cond_channels:
            if cond is None:
                raise ValueError(f"this denoiser expects {self.config.cond_channels} landmark-feature channels")
            sample = torch.cat([sample, cond.to(sample.dtype)], dim=1)  # K = Concat(Z_t, F)
        residuals = list(cond_residuals) if cond_residuals is not None else []
        if residuals and len(residuals) != len(self.config.channel_mult):
            raise ValueError(f"expected {len(self.config.channel_mult)} landmark residuals, got {len(residuals)}")

        h = self.conv_in(sample)  # (B * F, C0, H, W)
        level = 0
        if residuals:
            h = h + residuals[0].to(h.dtype)
        skips = [h]
        for layer in self.down_layers:
            if isinstance(layer, Downsample2D):
                h = layer(h)  # (B * F, C, H / 2^level, W / 2^level)
                level += 1
                if residuals:
                    h = h + residuals[level].to(h.dtype)
            else:
                h = layer(h, temb, z_scale, z_tokens, num_frames)
            skips.append(h)
        for layer in self.mid_layers:
            h = layer(h, temb, z_scale, z_tokens, num_frames)  # (B * F, C_last, H / 2^(L-1), W / 2^(L-1))
        for layer in self.up_layers:
            h = layer(torch.cat([h, skips.pop()], dim=1), temb, z_scale, z_tokens, num_frames)
        out = self.conv_out(nn.functional.silu(self.norm_out(h)))  # (B * F, C_out, H, W)
        return out.unflatten(0, (batch, num_frames)) if video else out

    # ----- stage 3 from stage 1 ------------------------------------------------------------------------
    @classmethod
    def inflate(cls, image_unet: ConditionalUNet, **changes) -> ConditionalUNet:
        """The stage-3 model from a stage-1 one: same weights, plus what `changes` adds (temporal layers,
        landmark-feature input channels), all of it zero-initialised so the result starts as the image model."""
        config = {k: v for k, v in image_unet.config.items() if not k.startswith("_")}
        config.update(changes)
        if config["in_channels"] != image_unet.config.in_channels:
            raise ValueError("inflating cannot change the latent channels")
        model = cls(**config)
        state = image_unet.state_dict()
        conv_in = model.conv_in.weight.detach().clone()
        old = image_unet.config.in_channels + image_unet.config.cond_channels
        conv_in[:, :old] = state["conv_in.weight"]  # new F channels keep their zero weights
        state["conv_in.weight"] = conv_in
        missing, unexpected = model.load_state_dict(state, strict=False)
        not_new = [key for key in missing if ".temporal." not in key]
        if not_new or unexpected:
            raise ValueError(f"the image model does not fit: missing {not_new[:3]}, unexpected {unexpected[:3]}")
        return model
