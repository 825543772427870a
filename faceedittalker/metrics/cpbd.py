"""CPBD: the cumulative probability of blur detection (Narvekar & Karam, 2011), a no-reference sharpness score.

Computed the way the field computes it, i.e. as the `cpbd` package does (the MATLAB port every talking-head paper
uses), but vectorised with NumPy instead of per-pixel Python loops:

- the frame as grey levels 0-255 in float64 (RGB uint8 frames are converted with PIL's "L", as `imread(mode='L')`);
- block classification: skimage's Canny (default sigma 1 and thresholds); a 64 x 64 block is an edge block when more
  than 0.2 % of its pixels are Canny edges; only whole blocks count (the right / bottom remainder is ignored);
- edge widths: at Octave-style Sobel edges (vertical-edge Sobel, normalised kernel, threshold 2 * sqrt(mean
  strength^2), simple thinning) whose gradient angle quantises to 0 or 180 degrees, the Marziliano width = the number
  of monotone steps on both sides of the edge (at most 101 each);
- just-noticeable width 5 for block contrast (int(max - min)) <= 50, else 3; P = 1 - exp(-|w / w_JNB|^3.6);
- CPBD = the share of the edges in edge blocks whose P, rounded to percent, is <= 63 % (P <= 0.63).

Higher is sharper (1 = every edge is sharp).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import convolve
from skimage.feature import canny

BLOCK = 64
EDGE_BLOCK_SHARE = 0.002
BETA = 3.6
JNB_WIDTHS = (5.0, 3.0)  # w_JNB for block contrast <= 50 and > 50
JNB_CONTRAST_LIMIT = 50
MAX_STEPS = 100  # the reference looks at most 101 steps to each side
# The vertical-edge Sobel kernel (derivative along x), normalised so its absolute values sum to 1.
SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey levels 0-255 (float64) of an RGB uint8 (H, W, 3) frame (PIL's "L" conversion) or of a grey (H, W) one."""
    image = np.asarray(image)
    if image.ndim == 3:
        if image.dtype != np.uint8:
            raise ValueError(f"CPBD expects RGB frames as uint8, got {image.dtype}")
        image = np.asarray(Image.fromarray(image).convert("L"))
    if image.ndim != 2:
        raise ValueError(f"CPBD expects an (H, W) or (H, W, 3) frame, got shape {image.shape}")
    return image.astype(np.float64)


def sobel_edges(grey: np.ndarray) -> np.ndarray:
    """Octave's `edge(image, 'sobel')` restricted to the x derivative: thresholded, then thinned to local maxima."""
    strength = convolve(grey, SOBEL_X) ** 2  # scipy's default 'reflect' border, as the reference
    strength[strength <= 2 * np.sqrt(strength.mean())] = 0
    # A pixel is an edge when it beats both neighbours horizontally or both vertically (zero outside the image).
    padded = np.pad(strength, 1)
    centre = padded[1:-1, 1:-1]
    horizontal = (centre > padded[1:-1, :-2]) & (centre > padded[1:-1, 2:])
    vertical = (centre > padded[:-2, 1:-1]) & (centre > padded[2:, 1:-1])
    return horizontal | vertical


def _run_to_left(condition: np.ndarray) -> np.ndarray:
    """For every column j, how many consecutive columns j, j-1, ... satisfy `condition` (per row)."""
    columns = np.arange(condition.shape[1])
    last_false = np.maximum.accumulate(np.where(condition, -1, columns[None]), axis=1)
    return columns[None] - last_false


def _run_to_right(condition: np.ndarray) -> np.ndarray:
    """For every column j, how many consecutive columns j, j+1, ... satisfy `condition` (per row)."""
    return _run_to_left(condition[:, ::-1])[:, ::-1]


def marziliano_widths(edges: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Edge width (in pixels) at every edge whose gradient is horizontal (angle 0 or 180 degrees), 0 elsewhere."""
    height, width = grey.shape
    gradient_y, gradient_x = np.gradient(grey)
    widths = np.zeros_like(grey)
    # The reference's angles: atan2 where gradient_x != 0, 90 where gradient_x = 0 and gradient_y is exactly pi / 2
    # (a quirk kept for exactness), else 0. It measures nothing when every angle is 0; atan2(gy, gx) = 0 exactly
    # when gy = 0 and gx > 0, so that is tested without computing the angles.
    quirk = (gradient_x == 0) & (gradient_y == np.pi / 2)
    if not (((gradient_x != 0) & ~((gradient_y == 0) & (gradient_x > 0))) | quirk).any():
        return widths
    interior = np.zeros((height, width), dtype=bool)
    interior[1:-1, 1:-1] = True
    rows, columns = np.nonzero(edges & interior)
    gx, gy = gradient_x[rows, columns], gradient_y[rows, columns]
    angles = np.zeros_like(gx)
    nonzero = gx != 0
    angles[nonzero] = np.arctan2(gy[nonzero], gx[nonzero]) * (180 / np.pi)
    angles[quirk[rows, columns]] = 90
    quantised = 45 * np.round(angles / 45)  # the angle at each measured edge pixel, to the nearest 45 degrees

    # falling[:, j]: grey[j-1] > grey[j]; rising[:, j]: grey[j-1] < grey[j] (both False at j = 0).
    falling = np.zeros((height, width), dtype=bool)
    rising = np.zeros((height, width), dtype=bool)
    falling[:, 1:] = grey[:, :-1] > grey[:, 1:]
    rising[:, 1:] = grey[:, :-1] < grey[:, 1:]
    # Runs of monotone steps: leftwards from column j (comparing j-1 with j), rightwards from j (j+1 with j).
    brighter_left, darker_left = _run_to_left(falling), _run_to_left(rising)
    darker_right = np.zeros((height, width), dtype=np.int64)
    brighter_right = np.zeros((height, width), dtype=np.int64)
    darker_right[:, :-1] = _run_to_right(falling[:, 1:])
    brighter_right[:, :-1] = _run_to_right(rising[:, 1:])

    def steps(runs: np.ndarray, start: int) -> np.ndarray:  # 1 + capped run starting at column c + start
        shifted = np.zeros_like(runs)
        if start < 0:
            shifted[:, -start:] = runs[:, :start]
        else:
            shifted[:, :-start] = runs[:, start:]
        return 1 + np.minimum(shifted, MAX_STEPS)

    # 180 degrees (dark to the right): the intensity rises going left and falls going right; 0 degrees mirrors it.
    width_180 = steps(brighter_left, -1) + steps(darker_right, 1)
    width_0 = steps(darker_left, -1) + steps(brighter_right, 1)
    horizontal_180, horizontal_0 = np.abs(quantised) == 180, quantised == 0
    widths[rows[horizontal_180], columns[horizontal_180]] = width_180[rows[horizontal_180], columns[horizontal_180]]
    widths[rows[horizontal_0], columns[horizontal_0]] = width_0[rows[horizontal_0], columns[horizontal_0]]
    return widths.astype(np.float64)


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness of one frame: RGB uint8 (H, W, 3) or grey (H, W) in 0-255. Frames smaller than one 64 x 64
    block, or without edge blocks, score 0 (as the reference)."""
    grey = to_grey(image)
    block_edges = canny(grey)
    widths = marziliano_widths(sobel_edges(grey), grey)
    rows, columns = grey.shape[0] // BLOCK, grey.shape[1] // BLOCK
    if rows == 0 or columns == 0:
        return 0.0

    def blocks(array: np.ndarray) -> np.ndarray:  # (H, W) -> (rows * columns, 64 * 64)
        array = array[: rows * BLOCK, : columns * BLOCK].reshape(rows, BLOCK, columns, BLOCK)
        return array.transpose(0, 2, 1, 3).reshape(rows * columns, BLOCK * BLOCK)

    is_edge_block = np.count_nonzero(blocks(block_edges), axis=1) > BLOCK * BLOCK * EDGE_BLOCK_SHARE
    grey_blocks, width_blocks = blocks(grey)[is_edge_block], blocks(widths)[is_edge_block]
    contrast = (grey_blocks.max(axis=1) - grey_blocks.min(axis=1)).astype(np.int64)
    jnb = np.where(contrast <= JNB_CONTRAST_LIMIT, *JNB_WIDTHS)[:, None].repeat(BLOCK * BLOCK, axis=1)
    edge = width_blocks != 0
    probability = 1 - np.exp(-(np.abs(width_blocks[edge] / jnb[edge]) ** BETA))
    histogram = np.bincount(np.round(probability * 100).astype(np.int64), minlength=101).astype(np.float64)
    if len(probability):
        histogram = histogram / len(probability)
    return float(np.sum(histogram[:64]))


def video_cpbd(frames: np.ndarray) -> float:
    """Mean CPBD over the frames (F, H, W, 3) of a video."""
    return float(np.mean([cpbd(frame) for frame in frames]))
