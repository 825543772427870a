"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
from torch import nn


def group_count(channels: int, max_groups: int) -> int:
    """The largest GroupNorm group count <= `max_groups` (at least 1) that divides `channels`: GroupNorm needs a
    divisor, and narrow tiny models have fewer channels than the usual 32 groups."""
    return next(g for g in range(max(1, min(max_groups, channels)), 0, -1) if channels % g == 0)


def maybe_checkpoint(owner: nn.Module, module: nn.Module, *args) -> torch.Tensor:
    """`module(*args)`, recomputed in the backward pass instead of keeping its activations when `owner` has
    `gradient_checkpointing` set (diffusers' `enable_gradient_checkpointing()` sets it together with
    `_gradient_checkpointing_func`, torch.utils.checkpoint with use_reentrant=False) and gradients are on."""
    if torch.is_grad_enabled() and getattr(owner, "gradient_checkpointing", False):
        return owner._gradient_checkpointing_func(module, *args)
    return module(*args)
