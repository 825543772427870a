"""Attribute regions: the landmark points of an edit and the soft per-frame masks drawn from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceedittalker.landmarks.regions import ATTRIBUTE_REGIONS, region_box, region_masks, region_points
from faceedittalker.landmarks.topology import LIP_POINTS
from faceedittalker.synthetic.face import (
    RENDERED_ATTRIBUTES,
    Pose,
    render_face,
    rest_expression,
    sample_identity,
    with_attributes,
)
from faceedittalker.synthetic.sets import sample_rng


def test_region_points_are_the_union_or_the_whole_frame():
    assert region_points(["Wearing_Lipstick"]) == sorted(LIP_POINTS)
    both = region_points(["Eyeglasses", "Wearing_Lipstick"])
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


@pytest.mark.parametrize("name", sorted(set(ATTRIBUTE_REGIONS) & set(RENDERED_ATTRIBUTES)))
def test_each_region_holds_what_the_renderer_draws_for_its_attribute(name):
    """Toggle the attribute on 6 held-out people at 128 px: the pixels it changes (by > 8 levels) lie in the
    attribute's box (drawn from the landmarks with and without it: Smiling, Big_Lips, ... move the mesh), and the
    box is a small part of the frame."""
    changed_share, inside = [], []
    for index in range(6):
        person = sample_identity(sample_rng(0, "portraits", 1000 + index), Male=True, Bald=False,
                                 Mouth_Slightly_Open=False)  # fmt: skip
        off, on = (with_attributes(person, **{name: value}) for value in (False, True))
        (a, landmarks_off), (b, landmarks_on) = (render_face(p, rest_expression(p), Pose(), 128) for p in (off, on))
        changed = np.abs(a.astype(int) - b.astype(int)).max(-1) > 8
        box = region_box(landmarks_off, ATTRIBUTE_REGIONS[name], 128) | region_box(landmarks_on,
                                                                                   ATTRIBUTE_REGIONS[name], 128)
        changed_share.append(changed.mean())
        inside.append((changed & box).sum() / max(changed.sum(), 1))
        assert box.mean() < 0.2
    assert np.mean(changed_share) > 0.002  # the renderer does draw it
    assert min(inside) >= 0.85 and np.mean(inside) >= 0.9
