"""The linear attribute classifier C and the attribute library (paper Sec. III-C, Eq. 1 and 3; Alg. 2).

C is a single linear layer on the standardised semantic code, zn = (z_sem - mu) / sigma, trained with
sigmoid / BCE over the 40 CelebA attributes. Its weight rows are the edit directions w_att: the library is
the trained classifier itself (names, directions, mu, sigma), saved with `save_pretrained`.

Editing (Eq. 3, in DiffAE's normalised form):

    zn' = zn + alpha * sqrt(D) * w / ||w||,    z_sem' = zn' * sigma + mu

so alpha is measured in units of the typical length of a standardised code (sqrt(D) for D = 512): alpha = 0.1
moves the code by a tenth of its own norm. DiffAE used 0.3-0.5; larger values leave the data manifold.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from faceedittalker.errors import InputError

MAX_ALPHA = 1.0  # |alpha| beyond this moves z_sem by more than its own norm: refused as a likely mistake


class AttributeClassifier(ModelMixin, ConfigMixin):
    """Linear classifier C over the standardised z_sem; its weight rows are the attribute directions."""

    @register_to_config
    def __init__(self, names: Sequence[str], z_dim: int = 512):
        super().__init__()
        self.linear = nn.Linear(z_dim, len(names))
        # Statistics of z_sem over the training images (set once, before training; saved with the weights).
        self.register_buffer("z_mean", torch.zeros(z_dim))
        self.register_buffer("z_std", torch.ones(z_dim))

    @property
    def names(self) -> list[str]:
        return list(self.config.names)

    def set_statistics(self, z_sem: torch.Tensor) -> None:
        """Fix mu and sigma from the codes of the training set, (N, D)."""
        self.z_mean.copy_(z_sem.mean(0))
        self.z_std.copy_(z_sem.std(0).clamp_min(1e-6))

    def standardise(self, z_sem: torch.Tensor) -> torch.Tensor:
        return (z_sem - self.z_mean) / self.z_std

    def forward(self, z_sem: torch.Tensor) -> torch.Tensor:
        """z_sem (B, D) -> attribute logits (B, A)."""
        return self.linear(self.standardise(z_sem))

    def direction(self, name: str) -> torch.Tensor:
        """The unit edit direction w_att / ||w_att|| of one attribute, (D,), in standardised space."""
        weight = self.linear.weight[self.index(name)]
        return weight / weight.norm().clamp_min(1e-12)

    def index(self, name: str) -> int:
        """The row of an attribute; an unknown name is an `InputError` suggesting the closest valid one."""
        if name in self.names:
            return self.names.index(name)
        by_lower = {n.lower(): n for n in self.names}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.5)
        hint = f"did you mean '{by_lower[close[0]]}'? " if close else ""
        raise InputError(f"unknown attribute '{name}'; {hint}choose from: {', '.join(self.names)}")

    def edit_direction(self, z_sem: torch.Tensor, edits: Mapping[str, float]) -> torch.Tensor:
        """z_sem' - z_sem for `edits` (Eq. 3), (B, D): the edit is linear in alpha, so a ramp over time scales this."""
        return self.edit(z_sem, edits) - z_sem

    @torch.no_grad()
    def edit(self, z_sem: torch.Tensor, edits: Mapping[str, float]) -> torch.Tensor:
        """Eq. 3: move z_sem (B, D) along the directions of `edits` = {attribute name: alpha}."""
        zn = self.standardise(z_sem)
        scale = math.sqrt(zn.shape[-1])
        for name in edits:
            self.index(name)  # every name checked before any alpha
        for name, alpha in edits.items():
            if not math.isfinite(float(alpha)):
                raise InputError(f"alpha={alpha} for {name} is not a finite number")
            if not -MAX_ALPHA <= float(alpha) <= MAX_ALPHA:
                raise InputError(f"alpha={alpha} for {name} is out of range [-{MAX_ALPHA}, {MAX_ALPHA}]")
            zn = zn + float(alpha) * scale * self.direction(name)
        return zn * self.z_std + self.z_mean
