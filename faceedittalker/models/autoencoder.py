"""E_img and its decoder (paper Sec. III-C): images in [-1, 1] <-> latents Z0.

The paper runs the diffusion in the latent space of a Stable-Diffusion-style VAE (512 px -> 4x64x64).
`IdentityAutoencoder` runs the same code in pixel space, which is what tiny CPU configs use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from faceedittalker.errors import InputError

# The Stable Diffusion VAE architecture (sd-vae-ft-mse): used to build a randomly initialised VAE when
# no weights are present, e.g. to count parameters of the paper configuration offline.
SD_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


class IdentityAutoencoder(nn.Module):
    """Pixel space: Z0 is the image itself. Lets tiny configs run the latent-diffusion code unchanged."""

    latent_channels = 3
    downsample_factor = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def describe(self) -> dict[str, Any]:
        return {"kind": "identity"}


class LatentAutoencoder(nn.Module):
    """Wraps `diffusers.AutoencoderKL`; latents are scaled by the VAE's own `scaling_factor`."""

    def __init__(self, vae: AutoencoderKL, source: str | None = None, subfolder: str | None = None,
                 decode_batch_size: int = 8):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.source = source
        self.subfolder = subfolder
        self.decode_batch_size = decode_batch_size
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.latent_channels = int(vae.config.latent_channels)
        self.downsample_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # The posterior mean, not a sample: Z0 must be deterministic for DDIM inversion to reconstruct.
        mean = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean  # (B, 4, H/8, W/8)
        return (mean - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        # SD-VAE decoding costs ~2.5 TFLOP per 512 px frame: decode in batches to bound memory.
        chunks = []
        for chunk in latents.split(self.decode_batch_size):
            chunk = chunk.to(self.vae.dtype) / self.scaling_factor + self.shift_factor
            chunks.append(self.vae.decode(chunk).sample.clamp(-1, 1))
        return torch.cat(chunks)

    def describe(self) -> dict[str, Any]:
        return {"kind": "vae", "pretrained": self.source, "subfolder": self.subfolder}


def build_autoencoder(
    kind: str = "identity",
    pretrained: str | None = None,
    subfolder: str | None = None,
    random_init: bool = False,
    decode_batch_size: int = 8,
) -> nn.Module:
    """Build E_img from a config entry.

    kind: "identity" (pixel space) or "vae". `pretrained` is a local folder or a hub id; with
    `random_init=True` a VAE missing from disk and from the local hub cache is built from the SD-VAE
    architecture with random weights, without touching the network (parameter counts and smoke tests only).
    """
    if kind == "identity":
        return IdentityAutoencoder()
    if kind != "vae":
        raise InputError(f"unknown autoencoder kind '{kind}' (use 'identity' or 'vae')")
    if pretrained is None and not random_init:
        raise InputError("autoencoder.pretrained is not set: give a local VAE folder or a hub id")
    if pretrained is not None:
        try:
            vae = _load_vae(pretrained, subfolder, local_files_only=random_init)
            # A local folder is remembered as an absolute path, so exports load from any working directory.
            local = Path(pretrained).expanduser()
            source = str(local.resolve()) if local.exists() else pretrained
            return LatentAutoencoder(vae, source=source, subfolder=subfolder, decode_batch_size=decode_batch_size)
        except InputError:
            if not random_init:
                raise
    vae = AutoencoderKL(**SD_VAE_CONFIG)
    return LatentAutoencoder(vae, source=None, decode_batch_size=decode_batch_size)


def _load_vae(pretrained: str, subfolder: str | None, local_files_only: bool = False) -> AutoencoderKL:
    path = Path(pretrained).expanduser()
    looks_like_hub_id = not path.exists() and pretrained.count("/") == 1 and not pretrained.startswith((".", "/"))
    if not path.exists() and not looks_like_hub_id:
        raise InputError(
            f"VAE folder not found: {pretrained} (pass autoencoder.pretrained=DIR: a downloaded VAE such as "
            "stabilityai/sd-vae-ft-mse, or for the synthetic world stage 0's export, "
            "experiment=tiny_latent/autoencoder)"
        )
    try:
        source = str(path) if path.exists() else pretrained
        return AutoencoderKL.from_pretrained(source, subfolder=subfolder, local_files_only=local_files_only)
    except (OSError, ValueError) as err:
        where = "the folder" if path.exists() else "the hub (or its local cache)"
        raise InputError(
            f"could not load the VAE '{pretrained}' from {where}: {str(err).splitlines()[0]} "
            "(pass a local folder with config.json and weights as autoencoder.pretrained=DIR)"
        ) from err
