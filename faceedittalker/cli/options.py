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


def resolve_precision(precision: str | None, device: str) -> str:
    """`precision=null` means bf16 autocast on CUDA and fp32 on the CPU, where bf16 was measured ~10x slower
    (scripts/benchmark_infer.py: no AVX512-BF16 here, so bf16 convolutions take a slow path)."""
    if precision is None:
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return str(precision)
