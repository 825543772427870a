"""FID: the Frechet distance between Inception-v3 pool features of generated and ground-truth frames.

torchmetrics' `FrechetInceptionDistance` (torch-fidelity's port of the TF-Inception graph, features of the 2048-d
pool layer, frames resized to 299 x 299 the TF way), fed RGB uint8 frames. The weights are torch-fidelity's
conversion of the official TF Inception (2015-12-05), `weights-inception-2015-12-05-6726825d.pth` (~91 MB, released
at github.com/toshas/torch-fidelity/releases/tag/v0.2.0); they are read from a local file only, never downloaded:
without it `build_inception_fid` returns None with a one-line reason and the other metrics still run.

FID is a property of two *sets* of frames: `scripts/evaluate.py` pools every frame of every video of each side and
reports one value. Covariances of 2048-d features need >= 2048 frames to be full rank; fewer give a biased (larger)
value, comparable only between runs with the same number of frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = 2048


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 RGB -> (F, 3, H, W) uint8, the layout torchmetrics' Inception expects."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def missing_inception_reason(weights_dir: str | os.PathLike) -> str | None:
    """None when the Inception weights are in `weights_dir`, else the line saying which file to put where."""
    path = Path(weights_dir).expanduser() / INCEPTION_WEIGHTS_FILE
    if path.is_file():
        return None
    return (f"FID skipped: put torch-fidelity's TF-Inception weights {INCEPTION_WEIGHTS_FILE} (from "
            f"github.com/toshas/torch-fidelity/releases/tag/v0.2.0) at {path}")  # fmt: skip


def build_inception_fid(weights_dir: str | os.PathLike) -> tuple[FrechetInceptionDistance | None, str | None]:
    """(metric, None) with the standard TF-Inception features, or (None, reason) when the weights are missing.
    The file is first opened with `weights_only=True`, so a file holding anything but tensors is refused before
    torch-fidelity unpickles it."""
    reason = missing_inception_reason(weights_dir)
    if reason:
        return None, reason
    path = Path(weights_dir).expanduser() / INCEPTION_WEIGHTS_FILE
    torch.load(path, map_location="cpu", weights_only=True)  # raises on pickled code
    metric = FrechetInceptionDistance(feature=INCEPTION_FEATURES, feature_extractor_weights_path=str(path))
    return metric.set_dtype(torch.float64), None


class PrecomputedFeatures(nn.Module):
    """The identity on (N, D) feature rows, so torchmetrics' Frechet distance can be fed features directly."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.flatten(1).double()


def feature_fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Frechet distance (torchmetrics' computation, float64) between two sets of feature rows (N, D)."""
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


@torch.no_grad()
def set_fid(metric: FrechetInceptionDistance, generated: list[np.ndarray], reference: list[np.ndarray],
            batch_size: int = 32) -> float:
    """FID between all frames of the generated videos and all frames of the reference videos ((F, H, W, 3) uint8
    each). Resets the metric first."""
    metric.reset()
    for videos, real in ((reference, True), (generated, False)):
        for video in videos:
            for start in range(0, len(video), batch_size):
                metric.update(frames_to_tensor(video[start:start + batch_size]), real=real)
    return float(metric.compute())
