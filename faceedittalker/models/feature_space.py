"""Fig. 2(a), the image feature space: x <-> (z_sem, Z_T), DiffAE's dual-layer latent code.

    z_sem = E_sem(x)                               semantic code (global, editable)
    Z_T   = DDIM-invert(E_img(x) | z_sem)          stochastic code (details), Eq. 5
    x_hat = Dec(DDIM(Z_T | z_sem))                 reconstruction, Eq. 10

`ImageFeatureSpace.from_pretrained(export_dir)` rebuilds it from what stage 1 exported; no training config is
needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from faceedittalker.diffusion import DDIM
from faceedittalker.diffusion.ddim import Denoiser
from faceedittalker.models.autoencoder import build_autoencoder
from faceedittalker.models.pretrained import PretrainedFolder
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.unet import ConditionalUNet

CONFIG_FILE = "feature_space.json"


class ImageFeatureSpace(PretrainedFolder, nn.Module):
    """E_img + E_sem + eps_theta + DDIM: encode a face into (z_sem, Z_T) and decode it back."""

    config_file = CONFIG_FILE
    description = "stage-1 model"
    parts = {"semantic_encoder": SemanticEncoder, "unet": ConditionalUNet}

    def __init__(self, autoencoder: nn.Module, semantic_encoder: SemanticEncoder, unet: ConditionalUNet,
                 ddim: DDIM, resolution: int, sample_steps: int = 20, invert_steps: int = 20):
        super().__init__()
        self.autoencoder = autoencoder
        self.semantic_encoder = semantic_encoder
        self.unet = unet
        self.ddim = ddim
        self.resolution = resolution
        self.sample_steps = sample_steps
        self.invert_steps = invert_steps

    def denoiser(self, z_sem: torch.Tensor, cond: torch.Tensor | None = None) -> Denoiser:
        """eps_theta(., . | z_sem, F) with the conditions bound."""
        return lambda z_t, t: self.unet(z_t, t, z_sem, cond)

    @torch.no_grad()
    def encode_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> z_sem (B, Z)."""
        return self.semantic_encoder(images)

    @torch.no_grad()
    def encode_stochastic(self, images: torch.Tensor, z_sem: torch.Tensor, steps: int | None = None,
                          progress: bool = False) -> torch.Tensor:
        """The stochastic encoder: Z0 = E_img(x), then DDIM inversion conditioned on z_sem -> Z_T."""
        z0 = self.autoencoder.encode(images)
        return self.ddim.invert(self.denoiser(z_sem), z0, steps or self.invert_steps, progress=progress)

    @torch.no_grad()
    def decode(self, z_T: torch.Tensor, z_sem: torch.Tensor, steps: int | None = None,
               progress: bool = False) -> torch.Tensor:
        """DDIM from Z_T guided by z_sem, then the image decoder -> (B, 3, R, R) in [-1, 1]."""
        z0 = self.ddim.sample(self.denoiser(z_sem), z_T, steps or self.sample_steps, progress=progress)
        return self.autoencoder.decode(z0)

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        side = self.resolution // self.autoencoder.downsample_factor
        return (batch, self.autoencoder.latent_channels, side, side)

    # ----- persistence -----------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"resolution": self.resolution, "autoencoder": self.autoencoder.describe(),
                "diffusion": self.ddim.config_dict(), "sample_steps": self.sample_steps,
                "invert_steps": self.invert_steps}

    @classmethod
    def _from_parts(cls, directory: Path, config: dict, parts: dict, autoencoder_path: str | None = None,
                    **_) -> ImageFeatureSpace:
        """A stage-1 export folder; `autoencoder_path` overrides where the VAE weights live."""
        return cls(autoencoder=build_exported_autoencoder(config, autoencoder_path, directory),
                   ddim=DDIM(**config["diffusion"]), resolution=config["resolution"],
                   sample_steps=config["sample_steps"], invert_steps=config["invert_steps"], **parts)  # fmt: skip


def build_exported_autoencoder(config: dict, autoencoder_path: str | None = None,
                               directory: Path | None = None) -> nn.Module:
    """E_img as an export describes it; `autoencoder_path` overrides where the VAE weights live. A relative
    `pretrained` that names a folder inside the export `directory` is read from there: a model folder carries its
    own small VAE (`assemble_model`), while an absolute path or a hub id (the SD-VAE) is a reference."""
    settings = dict(config["autoencoder"])
    if autoencoder_path:
        settings["pretrained"] = autoencoder_path
    elif directory is not None and settings.get("pretrained"):
        settings["pretrained"] = resolve_vae_reference(settings["pretrained"], directory)
    return build_autoencoder(**settings)


def resolve_vae_reference(pretrained: str, directory: str | Path) -> str:
    """`pretrained` as recorded in an export: a relative name of a folder inside `directory` becomes that folder's
    path; anything else (an absolute path, a hub id) is returned as it is."""
    inside = Path(directory) / pretrained
    return str(inside) if not Path(pretrained).is_absolute() and inside.is_dir() else pretrained
