"""The linear attribute classifier C and the attribute library (paper Sec. III-C, Eq. 1 and 3; Alg. 2).

C is a single linear layer on the standardised semantic code, zn = (z_sem - mu) / sigma, trained with
sigmoid / BCE over the 40 CelebA attributes. Its weight rows are the edit directions w_att: the library is
the trained classifier itself (names, directions, mu, sigma), saved with `save_pretrained`.

Editing (Eq. 3, in DiffAE's normalised form):

    zn' = zn + alpha * sqrt(D) * w / ||w||,    z_sem' = zn' * sigma + mu

so alpha is measured in units of the typical length of a standardised code (sqrt(D) for D = 512): alpha = 0.1
moves the code by a tenth of its own norm. DiffAE used 0.3-0.5; larger values leave the data manifold.

Beyond the paper, an edit may `keep` other attributes (InterFaceGAN's conditional manipulation, Shen et al. 2020):
the direction loses its components along the kept attributes' directions and is renormalised, so the classifier's
scores of the kept attributes do not move with the edit (in a world where blond goes with young women, adding blond
along the plain direction also moves the score of Male).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from faceedittalker.errors import InputError

MAX_ALPHA = 1.0  # |alpha| beyond this moves z_sem by more than its own norm: refused as a likely mistake
MIN_EXAMPLES = 4  # per side for a user-defined attribute: fewer, and the direction is mostly who the faces are
# Letters, digits, _ and -: a name must survive `edit=[A,B]` on the command line.
ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


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

    @classmethod
    def from_examples(cls, name: str, positive: torch.Tensor, negative: torch.Tensor,
                      inverse_regularisation: float = 1.0) -> AttributeClassifier:
        """A library of one attribute fitted on example codes alone (a model folder without a library): mu and
        sigma are those of the examples."""
        library = cls(names=[name], z_dim=positive.shape[1])
        library.set_statistics(torch.cat([positive, negative]).float())
        return library.with_attribute(name, positive, negative, inverse_regularisation, overwrite=True)

    @torch.no_grad()
    def with_attribute(self, name: str, positive: torch.Tensor, negative: torch.Tensor,
                       inverse_regularisation: float = 1.0, overwrite: bool = False) -> AttributeClassifier:
        """A copy of the library with one more attribute (or `name`'s row refitted, with `overwrite`), from the
        z_sem (N, D) of faces with it (`positive`) and without it (`negative`).

        As stage 2 does for the 40: a linear classifier on the codes standardised with this library's mu and
        sigma (so the new direction lives where the others do), here a class-balanced L2 logistic regression
        solved exactly (a few examples, not a data set to train on); its weight row is the edit direction."""
        from faceedittalker.metrics.semantics import fit_logistic_regression

        check_new_attribute(name, self.names, len(positive), len(negative), overwrite)
        codes = self.standardise(torch.cat([positive, negative]).float().to(self.z_mean.device))
        labels = torch.cat([torch.ones(len(positive), 1), torch.zeros(len(negative), 1)]).bool()
        weight, bias = fit_logistic_regression(codes.cpu(), labels, inverse_regularisation)  # (D, 1), (1,)
        names = self.names if name in self.names else [*self.names, name]
        library = type(self)(names=names, z_dim=self.config.z_dim).to(self.z_mean.device)
        library.z_mean.copy_(self.z_mean)
        library.z_std.copy_(self.z_std)
        rows = len(self.names)
        library.linear.weight[:rows] = self.linear.weight
        library.linear.bias[:rows] = self.linear.bias
        row = names.index(name)
        library.linear.weight[row] = weight[:, 0].to(library.linear.weight)
        library.linear.bias[row] = bias[0].to(library.linear.bias)
        return library.eval()

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

    def conditional_direction(self, name: str, keep: Sequence[str] = ()) -> torch.Tensor:
        """The unit direction of `name` (D,) with its components along the `keep` attributes' directions removed
        (a projection onto the orthogonal complement of their span), so that moving along it leaves their
        classifier scores unchanged. No `keep`: `direction(name)`."""
        direction = self.direction(name)
        if not keep:
            return direction
        kept = torch.stack([self.linear.weight[self.index(k)] for k in keep], 1)  # (D, K)
        basis, _ = torch.linalg.qr(kept)  # orthonormal columns spanning the kept directions
        residual = direction - basis @ (basis.T @ direction)
        if residual.norm() < 1e-3:
            raise InputError(f"{name} cannot be edited while keeping {', '.join(keep)}: its direction lies in theirs")
        return residual / residual.norm()

    def edit_direction(self, z_sem: torch.Tensor, edits: Mapping[str, float], keep: Sequence[str] = ()
                       ) -> torch.Tensor:
        """z_sem' - z_sem for `edits` (Eq. 3), (B, D): the edit is linear in alpha, so a ramp over time scales this."""
        return self.edit(z_sem, edits, keep) - z_sem

    @torch.no_grad()
    def edit(self, z_sem: torch.Tensor, edits: Mapping[str, float], keep: Sequence[str] = ()) -> torch.Tensor:
        """Eq. 3: move z_sem (B, D) along the directions of `edits` = {attribute name: alpha}, each made orthogonal
        to the directions of the `keep` attributes (none: the paper's edit)."""
        zn = self.standardise(z_sem)
        scale = math.sqrt(zn.shape[-1])
        for name in [*edits, *keep]:
            self.index(name)  # every name checked before any alpha
        if both := sorted(set(edits) & set(keep)):
            raise InputError(f"{', '.join(both)} cannot be both edited and kept")
        for name, alpha in edits.items():
            if not math.isfinite(float(alpha)):
                raise InputError(f"alpha={alpha} for {name} is not a finite number")
            if not -MAX_ALPHA <= float(alpha) <= MAX_ALPHA:
                raise InputError(f"alpha={alpha} for {name} is out of range [-{MAX_ALPHA}, {MAX_ALPHA}]")
            zn = zn + float(alpha) * scale * self.conditional_direction(name, keep)
        return zn * self.z_std + self.z_mean


def check_new_attribute(name: str, existing: Sequence[str], num_positive: int, num_negative: int,
                        overwrite: bool = False) -> None:
    """A user-defined attribute's name and example counts, checked before anything is encoded: `InputError`."""
    if not ATTRIBUTE_NAME.fullmatch(name):
        raise InputError(f"attribute name {name!r} must be letters, digits, _ and - (e.g. Round_Glasses)")
    if name in existing and not overwrite:
        raise InputError(f"attribute '{name}' is in the library already (pass overwrite=true to refit it)")
    for side, count in (("positive", num_positive), ("negative", num_negative)):
        if count < MIN_EXAMPLES:
            raise InputError(f"need at least {MIN_EXAMPLES} {side} example images for '{name}', got {count}")
