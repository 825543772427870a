"""Full-reference video quality: PSNR and SSIM of a generated video against the ground truth.

Convention (as EAT's evaluation, the field's usual one): frames are RGB uint8 (F, H, W, 3) of equal size, compared
frame by frame with data range 255 and averaged over frames. PSNR is skimage's (10 log10(255^2 / MSE) over all
pixels and channels of a frame; an identical frame gives inf, so an identical video gives inf). SSIM is skimage's
`structural_similarity` with its defaults: 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, computed per channel and
averaged. Whether frames are whole frames or face crops is the caller's choice (`scripts/evaluate.py` crops both
sides with the same box; see there).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

DATA_RANGE = 255


def _check_pair(generated: np.ndarray, reference: np.ndarray) -> None:
    if generated.shape != reference.shape or generated.ndim != 4 or generated.shape[-1] != 3:
        raise ValueError(f"expected two (F, H, W, 3) videos of one shape, got {generated.shape} and {reference.shape}")
    if generated.dtype != np.uint8 or reference.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {generated.dtype} and {reference.dtype}")


def frame_psnr(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB) of two (F, H, W, 3) uint8 videos; inf where a frame is identical."""
    _check_pair(generated, reference)
    errors = (generated.astype(np.float64) - reference.astype(np.float64)) ** 2
    mse = errors.reshape(len(errors), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(DATA_RANGE**2 / mse)


def video_psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (dB); inf when any frame is identical (as skimage per frame)."""
    return float(np.mean(frame_psnr(generated, reference)))


def frame_ssim(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of two (F, H, W, 3) uint8 videos (skimage defaults, 7 x 7 window, data range 255)."""
    _check_pair(generated, reference)
    return np.array([structural_similarity(g, r, channel_axis=-1, data_range=DATA_RANGE)
                     for g, r in zip(generated, reference, strict=True)])  # fmt: skip


def video_ssim(generated: np.ndarray, reference: np.ndarray) -> float:
    """Mean over frames of the per-frame SSIM."""
    return float(np.mean(frame_ssim(generated, reference)))

