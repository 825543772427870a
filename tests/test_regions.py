"""Attribute regions: the landmark points of an edit and the soft per-frame masks drawn from them."""

from __future__ import annotations

import numpy as np
import torch

from faceedittalker.landmarks.regions import ATTRIBUTE_REGIONS, region_masks, region_points
from faceedittalker.landmarks.topology import LIP_POINTS


def test_region_points_are_the_union_or_the_whole_frame():
    assert region_points(["Smiling"]) == sorted(LIP_POINTS)
    both = region_points(["Eyeglasses", "Smiling"])
    assert set(both) == set(ATTRIBUTE_REGIONS["Eyeglasses"]) | set(LIP_POINTS)
    assert region_points(["Eyeglasses", "Blond_Hair"]) is None  # hair has no landmark region: the whole frame
    assert region_points([]) is None


def test_region_masks_follow_each_frame_with_a_soft_edge():
    landmarks = np.full((2, 478, 3), 0.5, np.float32)
    landmarks[0, [1, 2], :2] = [[0.25, 0.25], [0.5, 0.5]]  # frame 0: a box in the upper left
    landmarks[1, [1, 2], :2] = [[0.5, 0.5], [0.75, 0.75]]  # frame 1: moved to the lower right
    masks = region_masks(landmarks, [1, 2], 32)
    assert masks.shape == (2, 1, 32, 32) and masks.dtype == torch.float32
    assert masks[0, 0, 12, 12] == 1 and masks[0, 0, 28, 28] == 0 and masks[1, 0, 20, 20] == 1
    assert masks[1, 0, 4, 4] == 0
    edge = masks[0, 0, 12, :]
    assert ((edge > 0) & (edge < 1)).sum() == 4  # a two-pixel ramp on each side of the box
