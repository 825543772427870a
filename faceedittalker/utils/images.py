"""Small image helpers shared by training samples, scripts and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceedittalker.utils.files import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> uint8 (..., H, W, 3)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.movedim(-3, -1).cpu().numpy()


def image_grid(columns: list[torch.Tensor], padding: int = 2) -> np.ndarray:
    """Lay out equally shaped batches (B, 3, H, W) as columns: row i shows sample i of every batch."""
    batch, _, height, width = columns[0].shape
    grid = torch.ones(3, batch * (height + padding) + padding, len(columns) * (width + padding) + padding)
    for c, images in enumerate(columns):
        for r, image in enumerate(images.detach().float().cpu()):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[:, top:top + height, left:left + width] = image
    return to_uint8(grid)


def save_grid(columns: list[torch.Tensor], path: str | Path, zoom: int = 1, padding: int = 2) -> Path:
    """Write `image_grid(columns, padding)` as a picture, enlarged `zoom` times (nearest neighbour: tiny models
    work at 32 px), through a temporary file so that no half-written picture is left behind."""
    picture = Image.fromarray(image_grid(columns, padding))
    if zoom > 1:
        picture = picture.resize((picture.width * zoom, picture.height * zoom), Image.Resampling.NEAREST)
    path = Path(path)
    with atomic_write(path) as tmp:
        picture.save(tmp)
    return path
