"""Where on the face an attribute lives, as landmark points, and the masks drawn from them.

An edit of z_sem changes the whole decoded image in principle (Eq. 3 moves one global code); on a weakly trained
model it also moves what the attribute direction picked up by chance (the background, the skin, the mouth). A
region turns that into a local edit when asked (`edit_region=true` in the pipeline, beyond the paper): the edited
and unedited noise predictions are blended by the mask of the attribute's region at every step, as blended
diffusion does, so the rest of the frame follows the unedited code. The evaluation reads the same regions to
measure how much an edit leaks outside them (masked PSNR). Most regions are the box of a few landmark points (the
eyes for Eyeglasses); the hair's is the frame outside the inner face's box (`HAIR_REGIONS`), so a hair colour edit
leaves the eyes, nose, mouth and cheeks alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from faceedittalker.landmarks.topology import (
    LEFT_BROW_UPPER,
    LEFT_EYE,
    LEFT_EYE_LOWER,
    LIP_POINTS,
    RIGHT_BROW_UPPER,
    RIGHT_EYE,
    RIGHT_EYE_LOWER,
)

FACE_SIDES = [234, 454]  # the cheek points level with the eyes: a frame's temples
NOSE_TIP = 1
CHEEKS = [50, 280]
CHIN = [148, 152, 377]
JAW = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]  # ear to ear, lower oval
HAIRLINE = [389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162]  # the upper face oval, temple to temple
EYES_AND_BROWS = RIGHT_EYE + LEFT_EYE + RIGHT_BROW_UPPER + LEFT_BROW_UPPER

# CelebA attributes with a landmark region; the others (hair colour, skin, age, sex, ...) are the whole frame.
# Each box holds (nearly) every pixel the synthetic renderer changes for its attribute (tests/test_regions.py).
ATTRIBUTE_REGIONS: dict[str, list[int]] = {
    "Eyeglasses": EYES_AND_BROWS + FACE_SIDES,  # the frames reach the temples
    "Arched_Eyebrows": EYES_AND_BROWS,
    "Bushy_Eyebrows": EYES_AND_BROWS,
    "Narrow_Eyes": EYES_AND_BROWS,
    "Bags_Under_Eyes": EYES_AND_BROWS,
    "Smiling": LIP_POINTS + CHEEKS + JAW,  # a smile raises the cheeks and stretches the lower face
    "Mouth_Slightly_Open": LIP_POINTS + JAW,  # the jaw drops
    "Wearing_Lipstick": LIP_POINTS,
    "Big_Lips": LIP_POINTS,
    "Mustache": LIP_POINTS + [NOSE_TIP],
    "Goatee": LIP_POINTS + CHIN,
    "5_o_Clock_Shadow": LIP_POINTS + JAW,  # stubble from ear to ear below the cheeks
    "No_Beard": LIP_POINTS + JAW + [NOSE_TIP],  # every beard: moustache, goatee, stubble
    "Bangs": HAIRLINE + RIGHT_BROW_UPPER + LEFT_BROW_UPPER,  # the forehead down to the brows
    "Rosy_Cheeks": RIGHT_EYE_LOWER + LEFT_EYE_LOWER + CHEEKS + FACE_SIDES + [61, 291],  # lids to mouth corners
}
# CelebA's hair attributes: everything outside the box from the eyes to the chin, ear to ear (margin 0). The
# renderer's brows and beards take the hair colour too; the region leaves them as they were.
INNER_FACE = RIGHT_EYE + LEFT_EYE + JAW
HAIR_REGIONS = {name: INNER_FACE for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald",
                                              "Wavy_Hair", "Straight_Hair", "Receding_Hairline")}  # fmt: skip
REGION_MARGIN = 0.2  # the points' box is widened by this share of its size on each side (and by 1 px)


def region_box(landmarks: np.ndarray, points: list[int], size: int, margin: float = REGION_MARGIN) -> np.ndarray:
    """(size, size) bool: the box of `points` of crop-normalised landmarks (478, 3), widened by `margin`."""
    xy = landmarks[points, :2] * size
    low, high = xy.min(0), xy.max(0)
    pad = (high - low) * margin + 1
    x0, y0 = np.floor(np.clip(low - pad, 0, size)).astype(int)
    x1, y1 = np.ceil(np.clip(high + pad, 0, size)).astype(int)
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def has_region(attributes: Iterable[str]) -> bool:
    """Whether every one of the (at least one) attributes has a region; otherwise an edit of them is global."""
    names = list(attributes)
    return bool(names) and all(n in ATTRIBUTE_REGIONS or n in HAIR_REGIONS for n in names)


def attribute_region(landmarks: np.ndarray, attribute: str, size: int) -> np.ndarray | None:
    """(size, size) bool: where `attribute` lives in a frame with crop-normalised landmarks (478, 3), or None (the
    whole frame)."""
    if attribute in ATTRIBUTE_REGIONS:
        return region_box(landmarks, ATTRIBUTE_REGIONS[attribute], size)
    if attribute in HAIR_REGIONS:
        return ~region_box(landmarks, HAIR_REGIONS[attribute], size, margin=0.0)
    return None


def region_masks(landmarks: np.ndarray, attributes: Iterable[str], size: int) -> torch.Tensor | None:
    """Per-frame soft masks (T, 1, size, size) in [0, 1] of the union of the attributes' regions in crop-normalised
    landmarks (T, 478, 3): 1 inside, 0 outside, a two-pixel ramp between (a hard edge leaves a seam after
    denoising); None when one of them has no region (the edit is global)."""
    names = list(attributes)
    if not has_region(names):
        return None
    regions = np.stack([np.logical_or.reduce([attribute_region(frame, n, size) for n in names])
                        for frame in landmarks])  # (T, size, size)  # fmt: skip
    masks = torch.from_numpy(regions).float()[:, None]
    return F.avg_pool2d(masks, 3, stride=1, padding=1, count_include_pad=False)
