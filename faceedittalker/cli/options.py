"""What the command-line scripts share: Hydra values as plain Python, and the device choice."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from faceedittalker.errors import InputError


def plain(value: Any) -> Any:
    """A Hydra value as plain Python (lists from ListConfig)."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def resolve_device(device: str | None) -> str:
    """`device=null` means CUDA when there is one; asking for CUDA without one is a clear error."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device} but no CUDA device is available (use device=cpu)")
    return str(device)
