"""Attribute regions: the landmark points of an edit and the soft per-frame masks drawn from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceedittalker.landmarks.regions import (
    ATTRIBUTE_REGIONS,
    HAIR_REGIONS,
    INNER_FACE,
    attribute_region,
    has_region,
    region_box,
    region_masks,
)
from faceedittalker.landmarks.topology import LEFT_EYE, LIP_POINTS, RIGHT_EYE
from faceedittalker.synthetic.face import (
    RENDERED_ATTRIBUTES,
    Pose,
    render_face,
    rest_expression,
    sample_identity,
    with_attributes,
)
from faceedittalker.synthetic.sets import sample_rng


def test_region_masks_are_the_union_of_the_attributes_regions_or_none():
    landmarks = np.random.default_rng(0).uniform(0.3, 0.7, (2, 478, 3)).astype(np.float32)
    both = region_masks(landmarks, ["Eyeglasses", "Wearing_Lipstick"], 32)
    for frame in range(2):
        union = attribute_region(landmarks[frame], "Eyeglasses", 32) | attribute_region(landmarks[frame],
                                                                                          "Wearing_Lipstick", 32)
        assert ((both[frame, 0] == 1).numpy() <= union).all() and ((both[frame, 0] > 0).numpy() >= union).all()
    assert region_masks(landmarks, ["Eyeglasses", "Male"], 32) is None  # Male has no region: the whole frame
    assert region_masks(landmarks, [], 32) is None
    assert has_region(["Blond_Hair", "Eyeglasses"]) and not has_region(["Young"]) and not has_region([])


def test_the_hair_region_is_the_frame_outside_the_inner_face():
    person = sample_identity(sample_rng(0, "portraits", 1000), Mouth_Slightly_Open=False, Bald=False)
    _, landmarks = render_face(person, rest_expression(person), Pose(), 64)
    hair = attribute_region(landmarks, "Blond_Hair", 64)
    inner = region_box(landmarks, INNER_FACE, 64, margin=0.0)
    assert (hair == ~inner).all() and 0.7 < hair.mean() < 0.95
    face = (landmarks[RIGHT_EYE + LEFT_EYE + LIP_POINTS, :2] * 64).astype(int)
    assert not hair[face[:, 1], face[:, 0]].any()  # the eyes and lips are not the hair's


def test_region_masks_follow_each_frame_with_a_soft_edge():
    landmarks = np.full((2, 478, 3), 0.5, np.float32)
    landmarks[0, LIP_POINTS, :2] = [0.25, 0.25]  # frame 0: the lips' box in the upper left
    landmarks[0, LIP_POINTS[0], :2] = [0.5, 0.5]
    landmarks[1, LIP_POINTS, :2] = [0.5, 0.5]  # frame 1: moved to the lower right
    landmarks[1, LIP_POINTS[0], :2] = [0.75, 0.75]
    masks = region_masks(landmarks, ["Wearing_Lipstick"], 32)
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


@pytest.mark.parametrize("name", sorted(set(HAIR_REGIONS) & set(RENDERED_ATTRIBUTES)))
def test_the_hair_region_holds_most_of_what_a_hair_edit_changes(name):
    """Toggling a hair attribute changes the hair mass (outside the inner face) and the hair-coloured brows and
    beards (inside it, left alone by the region): most changed pixels are the region's."""
    inside = []
    for index in range(6):
        person = sample_identity(sample_rng(0, "portraits", 1000 + index), Mouth_Slightly_Open=False, Bald=False)
        off, on = (with_attributes(person, **{name: value}) for value in (False, True))
        (a, landmarks), (b, _) = (render_face(p, rest_expression(p), Pose(), 128) for p in (off, on))
        changed = np.abs(a.astype(int) - b.astype(int)).max(-1) > 8
        inside.append((changed & attribute_region(landmarks, name, 128)).sum() / max(changed.sum(), 1))
    assert min(inside) >= 0.7 and np.mean(inside) >= 0.8
