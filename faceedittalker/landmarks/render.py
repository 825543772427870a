"""The landmark image L: the contours of one face drawn on a black canvas, as AniPortrait draws its pose images.

Training (the clip dataset), inference (the pipeline) and the evaluation pictures all draw with `render_landmarks`,
so a model always sees L drawn the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from faceedittalker.errors import InputError
from faceedittalker.landmarks.topology import CONNECTIONS, NUM_LANDMARKS, NUM_MESH_LANDMARKS

# RGB colours of the landmark image L: every part its own colour, the subject's left and right differ.
RENDER_COLOURS: dict[str, tuple[int, int, int]] = {
    "face_oval": (230, 230, 230),
    "left_eyebrow": (255, 170, 0),
    "right_eyebrow": (0, 170, 255),
    "left_eye": (0, 255, 0),
    "right_eye": (255, 0, 255),
    "lips_upper_outer": (255, 0, 0),
    "lips_lower_outer": (255, 255, 0),
    "lips_upper_inner": (0, 255, 255),
    "lips_lower_inner": (0, 0, 255),
    "left_iris": (120, 255, 120),
    "right_iris": (255, 120, 255),
}
_FACE_PARTS = ["face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "lips_upper_outer",
               "lips_lower_outer", "lips_upper_inner", "lips_lower_inner"]  # fmt: skip


def image_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an image size given as an int (square) or (height, width)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def default_thickness(image_size: int) -> int:
    """Line width of the landmark image L: AniPortrait's 2 px at 512 px, scaled with the image, at least 1."""
    return max(1, round(2 * image_size / 512))

def render_landmarks(
    points: np.ndarray,
    size: int | tuple[int, int],
    thickness: int = 2,
    draw_iris: bool = False,
) -> np.ndarray:
    """Draw the landmark image L: contours of one face on a black canvas, an (H, W, 3) uint8 RGB array.

    `points` are image-normalised (478, 2) or (478, 3) (z is ignored); `size` is an int or (height, width).
    Face oval, eyebrows, eyes and four lip contours in the colours of `RENDER_COLOURS`, no anti-aliasing, so
    the same points always give the same pixels. Training and inference both draw with this function.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < NUM_MESH_LANDMARKS or points.shape[1] not in (2, 3):
        raise InputError(f"expected landmarks of shape (478, 2|3), got {tuple(points.shape)}")
    if draw_iris and points.shape[0] < NUM_LANDMARKS:
        raise InputError("drawing the irises needs all 478 landmarks")
    height, width = image_hw(size)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    pixels = np.round(points[:, :2] * (width, height)).astype(np.int64)
    # Keep far-off points (a face leaving the frame) inside cv2's coordinate range.
    pixels = np.clip(pixels, -4 * max(width, height), 5 * max(width, height))
    parts = list(_FACE_PARTS)
    if draw_iris:
        parts += ["left_iris", "right_iris"]
    for part in parts:
        colour = RENDER_COLOURS[part]
        for start, end in CONNECTIONS[part]:
            start_xy, end_xy = tuple(map(int, pixels[start])), tuple(map(int, pixels[end]))
            cv2.line(canvas, start_xy, end_xy, colour, thickness, cv2.LINE_8)
    return canvas


def render_sequence(landmarks: np.ndarray, size: int, thickness: int | None = None) -> np.ndarray:
    """Landmark images of a sequence: (..., 478, 2|3) image-normalised -> (..., size, size, 3) uint8."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    flat = landmarks.reshape(-1, *landmarks.shape[-2:])
    thickness = default_thickness(size) if thickness is None else thickness
    drawn = np.stack([render_landmarks(points, size, thickness) for points in flat])
    return drawn.reshape(*landmarks.shape[:-2], size, size, 3)
