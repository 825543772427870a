"""Pixel metrics for images and videos in [-1, 1]."""

from __future__ import annotations

import torch

from faceedittalker.landmarks.topology import LIP_POINTS


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images (B, ...) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def lip_box(landmarks: torch.Tensor, size: int, margin: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """The mouth box of each frame on a `size` px grid: the lip landmarks' bounding box (landmarks (..., 478, 2|3),
    image-normalised), widened by `margin` of its size on every side. Returns (low, high) (..., 2) as integer
    (x, y) pixel bounds, high exclusive and at least one pixel past low."""
    lips = landmarks[..., LIP_POINTS, :2]  # (..., K, 2)
    low, high = lips.amin(dim=-2), lips.amax(dim=-2)  # (..., 2)
    pad = (high - low) * margin
    low = ((low - pad) * size).floor().clamp(0, size - 1).long()
    high = torch.maximum(((high + pad) * size).ceil().clamp(1, size).long(), low + 1)
    return low, high


def lip_box_mask(landmarks: torch.Tensor, size: int, margin: float = 0.25) -> torch.Tensor:
    """(..., size, size) bool: True inside each frame's `lip_box`."""
    low, high = lip_box(landmarks, size, margin)  # (..., 2)
    grid = torch.arange(size, device=landmarks.device)
    inside_x = (grid >= low[..., 0:1]) & (grid < high[..., 0:1])  # (..., size)
    inside_y = (grid >= low[..., 1:2]) & (grid < high[..., 1:2])
    return inside_y[..., :, None] & inside_x[..., None, :]


def ellipse_mask(size: int, center: tuple[float, float], radii: tuple[float, float]) -> torch.Tensor:
    """(size, size) bool: True at the pixels whose centres lie inside the ellipse of `center` (x, y) and `radii`
    (x, y), all as fractions of the image side."""
    coords = (torch.arange(size) + 0.5) / size  # pixel centres in [0, 1]
    dx = (coords[None, :] - center[0]) / radii[0]  # (1, size): columns
    dy = (coords[:, None] - center[1]) / radii[1]  # (size, 1): rows
    return dx.pow(2) + dy.pow(2) <= 1.0


def mouth_psnr(video: torch.Tensor, truth: torch.Tensor, landmarks: torch.Tensor, margin: float = 0.25) -> float:
    """PSNR (dB) of `video` vs `truth` (B, F, 3, R, R) in each frame's mouth box (`lip_box` of landmarks
    (B, F, 478, 3)), averaged over frames."""
    low, high = lip_box(landmarks, truth.shape[-1], margin)  # (B, F, 2)
    errors = []
    for b in range(truth.shape[0]):
        for f in range(truth.shape[1]):
            (x0, y0), (x1, y1) = low[b, f].tolist(), high[b, f].tolist()
            box = (slice(None), slice(y0, y1), slice(x0, x1))
            errors.append(psnr(video[b, f][box][None], truth[b, f][box][None]))
    return torch.cat(errors).mean().item()
