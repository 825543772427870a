"""A folder of (generated face, true face) pairs for refining the face upsampler (beyond the paper).

    pairs.safetensors   low (N, 3, r, r) and high (N, 3, s r, s r), uint8
    pairs.json          what made them: the model, clips, seed, counts, sizes

`scripts/make_upsampler_pairs.py` writes one from a model and the synthetic world (`metrics.world.upsampler_pairs`);
stage 0 (`stage0.upsampler.pairs`) mixes them into its batches of degraded renders.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from faceedittalker.errors import InputError
from faceedittalker.utils.files import atomic_directory, write_json_atomic

PAIRS_FILE = "pairs.safetensors"
PAIRS_JSON = "pairs.json"


def save_upsampler_pairs(folder: str | os.PathLike, low: np.ndarray, high: np.ndarray, info: dict,
                         overwrite: bool = False) -> Path:
    """Write the (N, r, r, 3) and (N, s r, s r, 3) uint8 frames and `info` into `folder`, all or nothing."""
    if low.dtype != np.uint8 or high.dtype != np.uint8 or len(low) != len(high) or not len(low):
        raise ValueError("pairs are equally many, at least one, uint8 frames")
    scale, remainder = divmod(high.shape[1], low.shape[1])
    if remainder or high.shape[1:3] != (scale * low.shape[1], scale * low.shape[2]):
        raise ValueError(f"high frames {high.shape[1:3]} are not a whole multiple of low frames {low.shape[1:3]}")
    tensors = {"low": torch.from_numpy(low).permute(0, 3, 1, 2).contiguous(),
               "high": torch.from_numpy(high).permute(0, 3, 1, 2).contiguous()}  # fmt: skip
    with atomic_directory(folder, replace=overwrite) as tmp:
        save_file(tensors, str(tmp / PAIRS_FILE))
        write_json_atomic(tmp / PAIRS_JSON, {**info, "pairs": len(low), "low_size": low.shape[1], "scale": scale})
    return Path(folder)


def load_upsampler_pairs(folder: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high): (N, 3, r, r) and (N, 3, s r, s r) uint8 tensors of a pairs folder."""
    path = Path(folder).expanduser() / PAIRS_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not an upsampler pairs folder (no {PAIRS_FILE}; "
                         "scripts/make_upsampler_pairs.py writes one)")
    tensors = load_file(str(path))
    return tensors["low"], tensors["high"]
