"""Noise schedule, conditional DDIM sampling and DDIM inversion (the stochastic encoder)."""

from faceedittalker.diffusion.ddim import DDIM, DiffusionConfig

__all__ = ["DDIM", "DiffusionConfig"]
