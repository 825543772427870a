"""Stage-3 models: the video eps_theta inflated from stage 1, E_ldm (Table V variants), windowed generation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import assert_checkpointing_keeps_gradients

from faceedittalker.diffusion import DDIM
from faceedittalker.models.autoencoder import IdentityAutoencoder
from faceedittalker.models.landmark_encoder import LandmarkEncoder
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.talking_head import TalkingHeadModel, edit_guided, window_starts
from faceedittalker.models.unet import ConditionalUNet


def image_unet(scale: float = 0.05, **changes) -> ConditionalUNet:
    torch.manual_seed(0)
    config = dict(in_channels=3, out_channels=3, sample_size=16, base_channels=16, channel_mult=(1, 2),
                  layers_per_block=1, attention_resolutions=(8,), attention_head_dim=16, norm_num_groups=8,
                  dropout=0.0, time_embed_dim=32, z_dim=8, cross_attention_dim=8)  # fmt: skip
    unet = ConditionalUNet(**{**config, **changes}).eval()
    with torch.no_grad():  # a "trained" model: no zero output layer, so every path shows in the output
        for parameter in unet.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return unet


def perturb(module: torch.nn.Module, scale: float = 0.05) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)


def encoder(unet: ConditionalUNet, **changes) -> LandmarkEncoder:
    config = dict(image_size=32, latent_size=16, stem_channels=(8, 16), cond_channels=2,
                  residual_channels=unet.residual_channels, attention_head_dim=8, norm_num_groups=4)  # fmt: skip
    torch.manual_seed(2)
    return LandmarkEncoder(**{**config, **changes}).eval()


def test_inflated_video_model_starts_as_the_image_model_on_every_frame():
    image = image_unet()
    video = ConditionalUNet.inflate(image, temporal_layers=True, cond_channels=2).eval()
    z_t, z_sem, t = torch.randn(2, 5, 3, 16, 16), torch.randn(2, 8), torch.tensor([10, 700])
    landmarks = encoder(video)(torch.rand(2, 5, 3, 32, 32), torch.rand(2, 3, 32, 32))
    out = video(z_t, t, z_sem, landmarks.cond, landmarks.residuals)  # (B, F, C, H, W)
    per_frame = image(z_t.flatten(0, 1), t.repeat_interleave(5), z_sem.repeat_interleave(5, dim=0))
    assert out.shape == (2, 5, 3, 16, 16)
    torch.testing.assert_close(out.flatten(0, 1), per_frame, atol=1e-5, rtol=1e-4)


def test_temporal_layers_let_frames_see_each_other_and_image_models_do_not():
    image = image_unet()
    video = ConditionalUNet.inflate(image, temporal_layers=True)
    perturb(video)  # trained temporal layers
    video.eval()
    z_t, z_sem = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 8)
    changed = z_t.clone()
    changed[:, 3] += 1.0  # only the last frame changes
    first_frame = lambda model, z: model(z, 100, z_sem)[:, 0]  # noqa: E731
    assert (first_frame(video, z_t) - first_frame(video, changed)).abs().max() > 1e-3
    frames_only = ConditionalUNet.inflate(image).eval()  # no temporal layers: 5-D input, frames independent
    torch.testing.assert_close(first_frame(frames_only, z_t), first_frame(frames_only, changed))


def test_inflating_refuses_a_model_that_does_not_fit():
    with pytest.raises(ValueError, match="latent channels"):
        ConditionalUNet.inflate(image_unet(), in_channels=4)


@pytest.mark.parametrize("variant", ["conv", "multiscale", "multiscale_xattn"])
def test_landmark_encoder_variants_of_table_v(variant):
    unet = ConditionalUNet.inflate(image_unet(), temporal_layers=True, cond_channels=2)
    settings = {"conv": dict(residual_channels=(), reference_cross_attention=False),
                "multiscale": dict(reference_cross_attention=False), "multiscale_xattn": {}}[variant]  # fmt: skip
    model = encoder(unet, **settings)
    frames, reference = torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 32, 32)
    features = model(frames, reference)
    assert features.cond.shape == (2, 3, 2, 16, 16)
    if variant == "conv":
        assert features.residuals == []
        return
    assert [r.shape for r in features.residuals] == [(6, 16, 16, 16), (6, 16, 8, 8)]
    assert all(r.abs().max() == 0 for r in features.residuals)  # zero convs: a fresh E_ldm changes nothing
    perturb(model)
    moved = model(frames, reference).residuals
    other_reference = model(frames, torch.rand(2, 3, 32, 32)).residuals
    difference = max((a - b).abs().max().item() for a, b in zip(moved, other_reference, strict=True))
    if variant == "multiscale_xattn":
        assert difference > 1e-4  # the frames attend to the reference landmarks
    else:
        assert difference == 0  # no cross-attention: the reference is not used


def test_landmark_encoder_checks_its_inputs():
    unet = image_unet()
    with pytest.raises(ValueError, match="halving"):
        LandmarkEncoder(image_size=48, latent_size=16)
    with pytest.raises(ValueError, match="residual_channels"):
        LandmarkEncoder(image_size=32, latent_size=16, residual_channels=(), reference_cross_attention=True)
    with pytest.raises(ValueError, match="reference_image"):
        encoder(unet)(torch.rand(1, 2, 3, 32, 32))


def test_window_starts_cover_every_frame_with_the_given_overlap():
    assert window_starts(10, 16, 4) == [0]
    assert window_starts(16, 16, 4) == [0]
    assert window_starts(40, 16, 4) == [0, 12, 24]
    for total in (17, 29, 100):
        starts = window_starts(total, 16, 4)
        covered = np.zeros(total, int)
        for start in starts:
            covered[start : start + 16] += 1
        assert covered.min() >= 1 and starts[-1] + 16 == total
        assert all(b - a <= 12 for a, b in zip(starts, starts[1:], strict=False))  # overlap >= 4


def talking_head(temporal: bool = True) -> TalkingHeadModel:
    unet = ConditionalUNet.inflate(image_unet(0.01), temporal_layers=temporal, cond_channels=2, temporal_max_frames=8)
    landmark_encoder = encoder(unet)
    perturb(unet, 0.01)
    perturb(landmark_encoder, 0.01)
    semantic = SemanticEncoder(image_size=16, base_channels=8, channel_mult=(1, 2), layers_per_block=1,
                               attention_resolutions=(), attention_head_dim=8, norm_num_groups=4, z_dim=8)  # fmt: skip
    return TalkingHeadModel(IdentityAutoencoder(), semantic, unet.eval(), landmark_encoder.eval(), DDIM(), 16, 32,
                            num_frames=4, window_overlap=2, sample_steps=10, invert_steps=10).eval()  # fmt: skip


def test_windowed_denoising_averages_overlapping_windows():
    model = talking_head(temporal=False)  # frames independent: every window predicts the same eps per frame
    z_t, z_sem = torch.randn(1, 11, 3, 16, 16), torch.randn(1, 8)
    images, reference = torch.rand(1, 11, 3, 32, 32), torch.rand(1, 3, 32, 32)
    windowed = model.denoiser(z_sem, images, reference)(z_t, torch.tensor(300))  # F computed per window
    features = model.landmark_features(images, reference)  # F of all frames at once
    whole = model.unet(z_t, 300, z_sem, features.cond, features.residuals)
    torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=1e-4)
    # Landmark images given lazily (a function of the frame slice) are the same condition.
    lazy = model.denoiser(z_sem, lambda index: images[index], reference)(z_t, torch.tensor(300))
    torch.testing.assert_close(lazy, windowed)


@pytest.mark.parametrize("per_frame_codes", [False, True])
def test_windows_denoised_in_one_batch_equal_windows_one_at_a_time(per_frame_codes):
    # Temporal layers on and two videos: the batched windows must not mix frames of different windows or videos.
    model = talking_head(temporal=True)
    z_t, images, reference = torch.randn(2, 11, 3, 16, 16), torch.rand(2, 11, 3, 32, 32), torch.rand(2, 3, 32, 32)
    z_sem = torch.randn(2, 11, 8) if per_frame_codes else torch.randn(2, 8)
    results = {}
    for per_call in (1, 2, 8):  # 11 frames -> 5 windows of 4: groups of 1, of 2 (one short group), all at once
        model.window_batch_size = per_call
        results[per_call] = model.denoiser(z_sem, images, reference)(z_t, torch.tensor(300))
    torch.testing.assert_close(results[2], results[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[8], results[1], atol=1e-5, rtol=1e-4)
    # A timestep per video (the training path) follows its video into every group.
    model.window_batch_size = 2
    per_video = model.denoiser(z_sem, images, reference)(z_t, torch.tensor([300, 300]))
    torch.testing.assert_close(per_video, results[1], atol=1e-5, rtol=1e-4)
    different = model.denoiser(z_sem, images, reference)(z_t, torch.tensor([300, 900]))
    torch.testing.assert_close(different[0], results[1][0], atol=1e-5, rtol=1e-4)
    assert (different[1] - results[1][1]).abs().max() > 1e-3


def test_windowed_generation_with_features_per_window_equals_all_at_once():
    model = talking_head(temporal=False)
    images, reference = torch.rand(1, 7, 3, 32, 32), torch.rand(1, 3, 32, 32)
    z_T, z_sem = torch.randn(1, 1, 3, 16, 16), torch.randn(1, 8)
    windowed = model.generate(z_T, z_sem, images, reference, steps=4)  # windows of 4 frames, overlap 2
    features = model.landmark_features(images, reference)
    whole = model.ddim.sample(lambda z, t: model.unet(z, t, z_sem, features.cond, features.residuals),
                              z_T.expand(1, 7, 3, 16, 16).contiguous(), 4)  # fmt: skip
    torch.testing.assert_close(windowed, model.autoencoder.decode(whole), atol=1e-5, rtol=1e-4)


def test_video_denoiser_takes_one_z_sem_per_frame():
    model = talking_head(temporal=True)
    z_t, images, reference = torch.randn(1, 4, 3, 16, 16), torch.rand(1, 4, 3, 32, 32), torch.rand(1, 3, 32, 32)
    z_a, z_b = torch.randn(1, 8), torch.randn(1, 8)
    shared = model.denoiser(z_a, images, reference)(z_t, torch.tensor(200))
    same = model.denoiser(z_a[:, None].expand(1, 4, 8), images, reference)(z_t, torch.tensor(200))
    torch.testing.assert_close(same, shared)
    mixed = model.denoiser(torch.stack([z_a, z_a, z_b, z_b], dim=1), images, reference)(z_t, torch.tensor(200))
    assert (mixed - shared).abs().max() > 1e-4  # the later frames' code reaches the output


def test_generation_starts_every_frame_from_the_reference_code():
    model = talking_head(temporal=False)  # frames independent, so each frame can be checked on its own
    reference, own_landmarks = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 32, 32)
    z_sem, z_T = model.encode_reference(reference, own_landmarks)
    assert z_sem.shape == (1, 8) and z_T.shape == (1, 1, 3, 16, 16)  # one Z_T for the whole video
    # Z_T is the DDIM inversion of a still video of the reference (one window) driven by its own landmarks ...
    still = own_landmarks[:, None].expand(1, model.num_frames, 3, 32, 32)
    window = model.denoiser(z_sem, still, own_landmarks)
    copies = reference[:, None].expand(1, model.num_frames, 3, 16, 16)
    inverted = model.ddim.invert(window, copies, model.invert_steps)
    torch.testing.assert_close(inverted, inverted[:, :1].expand_as(inverted))  # frames independent here
    torch.testing.assert_close(z_T, inverted[:, :1])
    # ... and six frames (two windows) driven by those landmarks each decode exactly as one frame does.
    frames = model.generate(z_T, z_sem, own_landmarks[:, None].expand(1, 6, 3, 32, 32), own_landmarks)
    one_frame = model.denoiser(z_sem, own_landmarks[:, None], own_landmarks)
    single = model.autoencoder.decode(model.ddim.sample(one_frame, z_T, model.sample_steps)[:, 0])
    assert frames.shape == (1, 6, 3, 16, 16)
    torch.testing.assert_close(frames, single[:, None].expand_as(frames), atol=1e-4, rtol=1e-4)
    # Other landmarks give other frames (F reaches the output).
    moved = model.generate(z_T, z_sem, torch.rand(1, 6, 3, 32, 32), own_landmarks)
    assert (moved - frames).abs().mean() > 1e-3


def test_talking_head_model_round_trips_through_its_export(tmp_path):
    model = talking_head()
    model.save_pretrained(tmp_path / "model")  # atomically: complete or absent
    loaded = TalkingHeadModel.from_pretrained(tmp_path / "model")
    assert (loaded.num_frames, loaded.window_overlap, loaded.landmark_image_size) == (4, 2, 32)
    z_t, z_sem, images = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 8), torch.rand(1, 4, 3, 32, 32)
    reference = torch.rand(1, 3, 32, 32)
    expected = model.denoiser(z_sem, images, reference)(z_t, torch.tensor(5))
    actual = loaded.denoiser(z_sem, images, reference)(z_t, torch.tensor(5))
    torch.testing.assert_close(actual, expected)


def test_evaluations_per_frame_count_what_the_denoiser_runs():
    model = talking_head(temporal=False)  # windows of 4 frames, overlap 2
    seen = []
    model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0] * args[0].shape[1]))
    z_T, z_sem = torch.randn(1, 1, 3, 16, 16), torch.randn(1, 8)
    model.denoise(z_T, z_sem, torch.rand(1, 11, 3, 32, 32), torch.rand(1, 3, 32, 32), 11, steps=3)
    assert sum(seen) == 3 * 5 * 4  # 3 steps x windows at 0, 2, 4, 6, 7 x 4 frames
    assert model.evaluations_per_frame(11, steps=3) == pytest.approx(sum(seen) / 11)
    assert model.evaluations_per_frame(3, steps=3) == 3  # one short window: no overlap


def test_gradient_checkpointing_keeps_the_video_unet_and_landmark_encoder_gradients():
    video = ConditionalUNet.inflate(image_unet(), temporal_layers=True, cond_channels=2, dropout=0.1)
    perturb(video)  # temporal layers and F channels no longer zero: every parameter gets a gradient
    landmark_encoder = encoder(video)
    perturb(landmark_encoder)
    video.train(), landmark_encoder.train()
    z_t, z_sem, t = torch.randn(1, 3, 3, 16, 16), torch.randn(1, 8), torch.tensor([300])
    frames, reference = torch.rand(1, 3, 3, 32, 32), torch.rand(1, 3, 32, 32)
    features = landmark_encoder(frames, reference)
    cond, residuals = features.cond.detach(), [r.detach() for r in features.residuals]
    assert_checkpointing_keeps_gradients(video, lambda m: m(z_t, t, z_sem, cond, residuals).square().mean())

    def landmark_loss(model: LandmarkEncoder) -> torch.Tensor:
        out = model(frames, reference)
        return sum(r.square().mean() for r in [out.cond, *out.residuals])

    assert_checkpointing_keeps_gradients(landmark_encoder, landmark_loss)


def test_edit_guidance_amplifies_the_edit_and_zero_is_eq3_alone():
    edited, unedited = (lambda z, t: z + 1.0), (lambda z, t: 2.0 * z)
    z = torch.randn(2, 3)
    torch.testing.assert_close(edit_guided(edited, unedited, 2.0)(z, None), (z + 1) + 2.0 * ((z + 1) - 2 * z))
    model = talking_head(temporal=False)
    z_T, z_sem, z_edit = torch.randn(1, 1, 3, 16, 16), torch.randn(1, 8), torch.randn(1, 8)
    images, reference = torch.rand(1, 5, 3, 32, 32), torch.rand(1, 3, 32, 32)
    plain = model.denoise(z_T, z_edit, images, reference, 5, steps=2)
    torch.testing.assert_close(model.denoise(z_T, z_edit, images, reference, 5, steps=2, unedited_z_sem=z_sem), plain)
    guided = model.denoise(z_T, z_edit, images, reference, 5, steps=2, unedited_z_sem=z_sem, edit_guidance=1.5)
    # One step of the sampler is affine in the prediction: guidance scales the edit's effect on it.
    unedited = model.denoise(z_T, z_sem, images, reference, 5, steps=1)
    one = model.denoise(z_T, z_edit, images, reference, 5, steps=1)
    one_guided = model.denoise(z_T, z_edit, images, reference, 5, steps=1, unedited_z_sem=z_sem, edit_guidance=1.5)
    torch.testing.assert_close(one_guided - unedited, 2.5 * (one - unedited), atol=1e-4, rtol=1e-3)
    assert not torch.allclose(guided, plain)


def test_edit_guidance_acts_only_inside_its_interval_of_noise_levels():
    edited, unedited = (lambda z, t: z + 1.0), (lambda z, t: 2.0 * z)
    z = torch.randn(2, 3)
    guided = edit_guided(edited, unedited, 2.0, interval=(0.0, 500.0))
    torch.testing.assert_close(guided(z, torch.tensor(499)), (z + 1) + 2.0 * ((z + 1) - 2 * z))  # inside: s = 2
    torch.testing.assert_close(guided(z, torch.tensor(500)), z + 1)  # outside: s = 0, the edited code alone
    per_video = guided(z, torch.tensor([100, 900]))  # timesteps per video: each its own factor
    torch.testing.assert_close(per_video, torch.stack([(z[0] + 1) + 2.0 * (1 - z[0]), z[1] + 1]))
    model = talking_head(temporal=False)
    z_T, z_sem, z_edit = torch.randn(1, 1, 3, 16, 16), torch.randn(1, 8), torch.randn(1, 8)
    images, reference = torch.rand(1, 5, 3, 32, 32), torch.rand(1, 3, 32, 32)
    run = functools.partial(model.denoise, z_T, z_edit, images, reference, 5, steps=2, unedited_z_sem=z_sem,
                            edit_guidance=1.5)
    plain = model.denoise(z_T, z_edit, images, reference, 5, steps=2)
    every_step = run()
    torch.testing.assert_close(run(edit_guidance_interval=(0.0, 1.0)), every_step)  # the default: every step
    torch.testing.assert_close(run(edit_guidance_interval=(0.999, 1.0)), plain, atol=1e-5, rtol=1e-4)  # no step in it
    low_noise_only = run(edit_guidance_interval=(0.0, 0.5))  # of the 2 steps, only the low-noise one guided
    assert not torch.allclose(low_noise_only, plain) and not torch.allclose(low_noise_only, every_step)
