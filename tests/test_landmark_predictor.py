"""P_ldm (Eq. 7): head-motion removal, targets, the temporal U-Net's shapes and persistence, a toy task it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceedittalker.models.landmark_predictor import (
    STABLE_POINTS,
    LandmarkPredictor,
    face_frame,
    face_units,
    landmark_loss,
    landmark_targets,
    predict_landmarks,
    rigid_align,
)
from faceedittalker.synthetic.sets import Expression, Pose, mouth_opening, render_face, sample_identity


@pytest.fixture(scope="module")
def faces() -> dict[str, torch.Tensor]:
    """Image-normalised (478, 3) landmarks of one synthetic person: closed mouth, open jaw, open jaw in another pose."""
    identity = sample_identity(np.random.default_rng(0))
    pose = Pose(yaw=12, pitch=-8, roll=5, shift_x=0.03, scale=1.1)
    _, closed = render_face(identity, Expression(), Pose(), 64)
    _, opened = render_face(identity, Expression(jaw_open=0.08), Pose(), 64)
    _, turned = render_face(identity, Expression(jaw_open=0.08), pose, 64)
    _, blink = render_face(identity, Expression(blink_left=1.0, blink_right=1.0, spread=0.8), Pose(), 64)
    faces = {"closed": closed, "opened": opened, "turned": turned, "blink": blink}
    return {name: torch.from_numpy(points) for name, points in faces.items()}


def random_similarity(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A proper rotation (B=1), a scale and a translation."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    rotation = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(rotation) < 0:
        rotation[:, 0] = -rotation[:, 0]
    scale = 0.7 + 0.6 * torch.rand((), generator=generator, dtype=torch.float64)
    shift = 0.2 * torch.randn(3, generator=generator, dtype=torch.float64)
    return rotation, scale, shift


def test_stable_points_do_not_move_with_speech_or_blinks(faces):
    assert len(STABLE_POINTS) == len(set(STABLE_POINTS)) == 20
    _, scale = face_frame(faces["closed"][None])
    for name in ("opened", "blink"):
        moved = (faces[name] - faces["closed"])[list(STABLE_POINTS)].norm(dim=-1).max() / scale
        assert moved < 1e-6, name
    assert (faces["opened"] - faces["closed"]).norm(dim=-1).max() / scale > 0.1  # while the jaw does move


def test_rigid_align_undoes_a_similarity_transform_and_keeps_the_mouth(faces):
    generator = torch.Generator().manual_seed(0)
    reference = faces["closed"][None]  # (1, N, 3)
    moved = []
    for _ in range(4):
        rotation, scale, shift = random_similarity(generator)
        moved.append((scale * faces["opened"].double() @ rotation.T + shift).float())
    frames = torch.stack(moved)[None]  # (1, 4, N, 3)
    aligned = rigid_align(frames, reference)
    assert aligned.shape == frames.shape and aligned.dtype == torch.float32
    torch.testing.assert_close(aligned, faces["opened"].expand_as(aligned), atol=1e-4, rtol=0)
    opening = (aligned[0, :, 14, 1] - aligned[0, :, 13, 1]) - (reference[0, 14, 1] - reference[0, 13, 1])
    assert (opening > 0.02).all()  # the jaw opening of the frames survives the alignment
    # A head turned by the renderer (a similarity in the synthetic world) is undone as well.
    turned = rigid_align(faces["turned"][None, None], reference)[0, 0]
    torch.testing.assert_close(turned, faces["opened"], atol=1e-4, rtol=0)
    # Two references in one batch are aligned independently.
    both = rigid_align(torch.stack([frames[0], frames[0]]), torch.cat([reference, faces["opened"][None]]))
    torch.testing.assert_close(both[0], aligned[0])
    torch.testing.assert_close(both[1], aligned[0], atol=1e-4, rtol=0)


def test_targets_are_zero_for_the_reference_and_in_face_units(faces):
    reference = faces["closed"][None]
    targets = landmark_targets(reference[:, None].expand(1, 3, -1, -1), reference)
    assert targets.shape == (1, 3, 478, 3) and targets.abs().max() < 1e-5
    centre, scale = face_frame(reference)
    assert centre.shape == (1, 1, 3) and scale.shape == (1, 1, 1)
    units = face_units(reference)
    torch.testing.assert_close(face_frame(units)[1], torch.ones(1, 1, 1))
    # The same face twice as large in the image gives the same targets.
    opened = landmark_targets(faces["turned"][None, None], reference)
    bigger = landmark_targets(2.0 * faces["turned"][None, None], 2.0 * reference)
    torch.testing.assert_close(opened, bigger, atol=1e-4, rtol=0)
    expected = (mouth_opening(faces["opened"].numpy()) - mouth_opening(faces["closed"].numpy())) / scale.item()
    assert opened[0, 0, 14, 1] - opened[0, 0, 13, 1] == pytest.approx(expected, rel=1e-3)


def tiny_model(audio_dim: int = 8, **kwargs) -> LandmarkPredictor:
    config = dict(audio_dim=audio_dim, hidden_dim=32, num_scales=2, blocks_per_scale=1, kernel_size=3) | kwargs
    return LandmarkPredictor(**config)


def test_untrained_model_predicts_the_reference_in_every_frame(faces):
    torch.manual_seed(0)
    model = LandmarkPredictor(audio_dim=16, hidden_dim=64).eval()
    reference = torch.stack([faces["closed"], faces["turned"]])  # (2, N, 3)
    landmarks = predict_landmarks(model, torch.randn(2, 9, 16), reference)
    assert landmarks.shape == (2, 9, 478, 3)
    assert torch.equal(landmarks, reference[:, None].expand_as(landmarks))


@pytest.mark.parametrize("length", [1, 7, 16, 33])
def test_output_shapes_for_any_length(length, faces):
    torch.manual_seed(0)
    model = LandmarkPredictor(audio_dim=12, hidden_dim=32, num_scales=3)
    torch.nn.init.normal_(model.head.weight, std=0.02)
    reference = face_units(faces["closed"][None].expand(2, -1, -1))
    offsets = model(torch.randn(2, length, 12), reference)
    assert offsets.shape == (2, length, 478, 3) and torch.isfinite(offsets).all()
    offsets.abs().mean().backward()  # trainable end to end
    assert model.audio_proj.weight.grad.abs().sum() > 0


def test_frames_do_not_depend_on_the_far_end_of_the_sequence(faces):
    """Fully convolutional with per-frame normalisation: frame 5 is the same in a 40- and a 200-frame clip."""
    torch.manual_seed(0)
    model = tiny_model().eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)
    audio = torch.randn(1, 200, 8)
    reference = face_units(faces["closed"][None])
    short, long = model(audio[:, :40], reference), model(audio, reference)
    torch.testing.assert_close(short[:, :5], long[:, :5], atol=1e-5, rtol=0)


def test_save_and_load_give_the_same_output(faces, tmp_path):
    torch.manual_seed(0)
    model = tiny_model(dropout=0.0).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a non-trivial output (the zero head predicts zeros)
    model.save_pretrained(tmp_path / "landmark_predictor")
    loaded = LandmarkPredictor.from_pretrained(tmp_path / "landmark_predictor").eval()
    assert loaded.config.hidden_dim == 32 and loaded.config.num_scales == 2
    audio, reference = torch.randn(2, 11, 8), face_units(faces["closed"][None].expand(2, -1, -1))
    expected = model(audio, reference)
    assert expected.abs().max() > 0 and torch.equal(loaded(audio, reference), expected)


def test_loss_weights_the_lips():
    target = torch.zeros(1, 2, 478, 3)
    on_lip, off_lip = target.clone(), target.clone()
    on_lip[..., 13, 1] = 1.0  # inner upper lip
    off_lip[..., 10, 1] = 1.0  # forehead
    assert landmark_loss(on_lip, target) == landmark_loss(off_lip, target) == pytest.approx(1 / (478 * 3))
    assert landmark_loss(on_lip, target, mouth_weight=4.0) > 2 * landmark_loss(off_lip, target, mouth_weight=4.0)


def _train(model: LandmarkPredictor, batch, units: torch.Tensor, steps: int) -> None:
    """Adam with a linear decay to zero: L1 on fresh toy batches of 16 x 32 frames."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        features, target = batch(16, 32)
        loss = landmark_loss(model(features, units), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def test_tiny_model_learns_a_lagged_mouth_opening(faces):
    """Toy Eq. 7: the jaw opens with the loudness of the previous frame (feature 0; 7 more features are noise)."""
    torch.manual_seed(0)
    reference = faces["closed"][None]
    # The true offsets of a fully open jaw (about 0.3 face units at the lower lip), scaled by loudness per frame.
    pattern = landmark_targets(faces["opened"][None, None], reference)[0, 0]  # (N, 3)
    generator = torch.Generator().manual_seed(0)

    def batch(size: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        knots = torch.rand(size, 1, length // 4 + 2, generator=generator)
        loudness = torch.nn.functional.interpolate(knots, size=length, mode="linear", align_corners=True)[:, 0]
        features = 0.2 * torch.randn(size, length, 8, generator=generator)
        features[..., 0] = loudness
        lagged = torch.cat([torch.zeros(size, 1), loudness[:, :-1]], dim=1)  # (B, T): loudness of frame t - 1
        return features, lagged[..., None, None] * pattern

    model = tiny_model(dropout=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 60k-parameter model: one thread is faster than two (and than two busy ones)
    try:
        _train(model, batch, face_units(reference).expand(16, -1, -1), steps=300)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    features, target = batch(16, 64)  # unseen loudness curves, longer than in training
    with torch.no_grad():
        predicted = model(features, face_units(reference).expand(16, -1, -1))
    ratio = landmark_loss(predicted, target) / landmark_loss(torch.zeros_like(target), target)
    print(f"toy P_ldm: loss / zero-prediction loss = {ratio:.3f}")
    assert ratio < 0.3, ratio
    opening = (predicted[..., 14, 1] - predicted[..., 13, 1]).flatten()
    truth = (target[..., 14, 1] - target[..., 13, 1]).flatten()
    correlation = np.corrcoef(opening.numpy(), truth.numpy())[0, 1]
    print(f"toy P_ldm: correlation of predicted and true mouth opening = {correlation:.3f}")
    assert correlation > 0.85
