"""Pixel metrics for images and videos in [-1, 1]."""

from __future__ import annotations

import torch

from faceedittalker.landmarks.topology import LIP_POINTS


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images (B, ...) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def mouth_psnr(video: torch.Tensor, truth: torch.Tensor, landmarks: torch.Tensor, margin: float = 0.25) -> float:
    """PSNR (dB) of `video` vs `truth` (B, F, 3, R, R) in each frame's mouth box: the lip landmarks' bounding box
    (landmarks (B, F, 478, 3), image-normalised), widened by `margin` of its size on every side."""
    size = truth.shape[-1]
    lips = landmarks[..., LIP_POINTS, :2]  # (B, F, K, 2)
    low, high = lips.amin(dim=2), lips.amax(dim=2)  # (B, F, 2)
    pad = (high - low) * margin
    low = ((low - pad) * size).floor().clamp(0, size - 1).long()
    high = ((high + pad) * size).ceil().clamp(1, size).long()
    errors = []
    for b in range(truth.shape[0]):
        for f in range(truth.shape[1]):
            (x0, y0), (x1, y1) = low[b, f].tolist(), high[b, f].tolist()
            box = (slice(None), slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1)))
            errors.append(psnr(video[b, f][box][None], truth[b, f][box][None]))
    return torch.cat(errors).mean().item()
