"""DDIM sampling and the stochastic encoder (DDIM inversion) checked against DiffAE's update rule."""

from __future__ import annotations

import pytest
import torch

from faceedittalker.diffusion import DDIM


def linear_denoiser(seed: int = 0):
    """A smooth, time-dependent stand-in for eps_theta: eps = (1 + t / T) * W z."""
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)) * 0.3
    return lambda z, t: torch.einsum("ij,bjhw->bihw", weight, z) * (1 + torch.as_tensor(t).float() / 1000)


def diffae_ddim_step(x, eps, a_from, a_to):
    """DiffAE (guided-diffusion) DDIM with eta = 0: x0_hat, then move to the other noise level."""
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from**0.5
    return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps


def test_sampling_matches_the_diffae_rule():
    ddim, den = DDIM(), linear_denoiser()
    z_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    steps = 10
    timesteps = ddim.timesteps(steps)
    assert timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    a = ddim.alphas_cumprod
    x = z_T
    for i, t in enumerate(timesteps):
        a_prev = a[timesteps[i + 1]] if i + 1 < steps else torch.tensor(1.0)  # the last step lands on x0
        x = diffae_ddim_step(x, den(x, t), a[t], a_prev)
    torch.testing.assert_close(ddim.sample(den, z_T, steps), x, rtol=1e-5, atol=1e-5)


def test_inversion_matches_the_diffae_reverse_rule_and_mirrors_sampling():
    ddim, den = DDIM(), linear_denoiser(2)
    z0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    steps = 10
    a = ddim.alphas_cumprod
    levels = ddim.timesteps(steps).flip(0).tolist()  # 0, 100, ..., 900
    # From the clean sample (alpha = 1) through every sampling level, noise predicted at the current point.
    x, a_cur, t_cur = z0, torch.tensor(1.0), 0
    for t_next in levels:
        x = diffae_ddim_step(x, den(x, torch.tensor(t_cur)), a_cur, a[t_next])
        a_cur, t_cur = a[t_next], t_next
    z_T = ddim.invert(den, z0, steps)
    torch.testing.assert_close(z_T, x, rtol=1e-5, atol=1e-5)


def test_inversion_then_sampling_returns_the_input_for_many_steps():
    # With a smooth eps model the ODE round trip closes as the step size shrinks (DiffAE's autoencoding).
    ddim, den = DDIM(), linear_denoiser(4)
    z0 = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    errors = [(ddim.sample(den, ddim.invert(den, z0, n), n) - z0).abs().max().item() for n in (20, 100, 500)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 5


def test_training_loss_is_the_eps_mse_at_the_sampled_timesteps():
    ddim = DDIM()
    z0 = torch.randn(4, 3, 4, 4)
    seen = {}

    def oracle(z_t, t):  # recovers the true noise from z_t and z0: the loss must then be 0
        seen["t"] = t
        a = ddim.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (z_t - a.sqrt() * z0) / (1 - a).sqrt()

    loss = ddim.training_loss(oracle, z0, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8
    assert seen["t"].shape == (4,) and 0 <= seen["t"].min() and seen["t"].max() < 1000
    zero = ddim.training_loss(lambda z_t, t: torch.zeros_like(z_t), z0, generator=torch.Generator().manual_seed(0))
    assert 0.5 < zero.item() < 1.6  # E[eps^2] = 1


def test_training_loss_pixel_weights_are_a_weighted_mean_per_sample():
    ddim = DDIM()
    z0 = torch.randn(2, 3, 4, 4)
    wrong_in_corner = lambda z_t, t: torch.zeros_like(z_t)  # noqa: E731

    def loss(weights):
        return ddim.training_loss(wrong_in_corner, z0, generator=torch.Generator().manual_seed(3),
                                  pixel_weights=weights).item()  # fmt: skip

    plain = ddim.training_loss(wrong_in_corner, z0, generator=torch.Generator().manual_seed(3)).item()
    assert abs(loss(torch.full((1, 1, 4, 4), 7.0)) - plain) < 1e-6  # uniform weights: the plain mean
    # All the weight on one pixel: the loss is that pixel's squared noise, mean over channels and samples.
    corner = torch.zeros(1, 1, 4, 4)
    corner[..., 0, 0] = 1.0
    noise = torch.randn(z0.shape, generator=_generator_after_timesteps(ddim, 2, 3))
    assert abs(loss(corner) - noise[..., 0, 0].pow(2).mean().item()) < 1e-5


def _generator_after_timesteps(ddim: DDIM, batch: int, seed: int) -> torch.Generator:
    """The generator state `training_loss` draws its noise from: after the timesteps of a batch."""
    generator = torch.Generator().manual_seed(seed)
    ddim.sample_timesteps(batch, torch.device("cpu"), generator)
    return generator


def test_pixel_space_sampling_clips_the_predicted_image():
    ddim = DDIM(clip_sample=True)
    out = ddim.sample(lambda z, t: -3 * torch.ones_like(z), torch.zeros(1, 3, 2, 2), 5)
    assert out.abs().max() <= 1 + 1e-6


def v_ddim_step(x, v, a_from, a_to):
    """DDIM with eta = 0 for a v-prediction model (Salimans & Ho 2022): x0 and eps from v, then move."""
    x0 = a_from**0.5 * x - (1 - a_from) ** 0.5 * v
    eps = a_from**0.5 * v + (1 - a_from) ** 0.5 * x
    return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps


def test_v_prediction_sampling_and_inversion_match_the_hand_written_rule():
    ddim, den = DDIM(prediction_type="v_prediction"), linear_denoiser(6)
    steps = 10
    a = ddim.alphas_cumprod
    timesteps = ddim.timesteps(steps)
    z_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    x = z_T
    for i, t in enumerate(timesteps):
        a_prev = a[timesteps[i + 1]] if i + 1 < steps else torch.tensor(1.0)
        x = v_ddim_step(x, den(x, t), a[t], a_prev)
    torch.testing.assert_close(ddim.sample(den, z_T, steps), x, rtol=1e-5, atol=1e-5)

    z0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(8)) * 2 - 1
    x, a_cur, t_cur = z0, torch.tensor(1.0), 0
    for t_next in timesteps.flip(0).tolist():
        x = v_ddim_step(x, den(x, torch.tensor(t_cur)), a_cur, a[t_next])
        a_cur, t_cur = a[t_next], t_next
    torch.testing.assert_close(ddim.invert(den, z0, steps), x, rtol=1e-5, atol=1e-5)
    # The eps rule on the same network output is a different map: the parametrisation is really used.
    assert not torch.allclose(DDIM().invert(den, z0, steps), x, atol=1e-3)


def test_each_prediction_type_trains_towards_its_own_target():
    z0 = torch.randn(4, 3, 4, 4)
    for prediction_type in ("epsilon", "v_prediction", "sample"):
        ddim = DDIM(prediction_type=prediction_type)

        def oracle(z_t, t, ddim=ddim):  # the exact eps from z_t and z0, turned into the configured target
            a = ddim.alphas_cumprod[t].view(-1, 1, 1, 1)
            eps = (z_t - a.sqrt() * z0) / (1 - a).sqrt()
            return {"epsilon": eps, "sample": z0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * z0}[
                ddim.config.prediction_type]

        assert ddim.training_loss(oracle, z0, generator=torch.Generator().manual_seed(0)).item() < 1e-8


def test_min_snr_weights_equal_the_formula():
    t = torch.tensor([0, 10, 100, 300, 500, 900, 999])
    gamma = 5.0
    for prediction_type, divisor in (("epsilon", lambda s: s), ("v_prediction", lambda s: s + 1),
                                     ("sample", lambda s: torch.ones_like(s))):
        ddim = DDIM(prediction_type=prediction_type, loss_weighting="min_snr", min_snr_gamma=gamma)
        a = ddim.alphas_cumprod[t].double()
        snr = a / (1 - a)
        expected = torch.minimum(snr, torch.full_like(snr, gamma)) / divisor(snr)
        torch.testing.assert_close(ddim.loss_weights(t).double(), expected, rtol=1e-5, atol=0)
    # eps with Min-SNR: weight 1 wherever SNR <= gamma (high noise), gamma / SNR below.
    weights = DDIM(loss_weighting="min_snr").loss_weights(torch.tensor([0, 999]))
    assert weights[1].item() == 1.0 and weights[0].item() < 1e-3
    assert DDIM().loss_weights(t).tolist() == [1.0] * len(t)


def test_min_snr_loss_is_the_weighted_mean_of_per_sample_errors():
    ddim = DDIM(prediction_type="v_prediction", loss_weighting="min_snr")
    z0 = torch.randn(6, 3, 4, 4)
    seen = {}

    def zero(z_t, t):
        seen["t"] = t
        return torch.zeros_like(z_t)

    generator = torch.Generator().manual_seed(3)
    loss = ddim.training_loss(zero, z0, generator=generator)
    # Replay the same draws: t first, then the noise.
    replay = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (6,), generator=replay)
    noise = torch.randn(z0.shape, generator=replay)
    assert torch.equal(seen["t"], t)
    per_sample = ddim.target(z0, noise, t).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(loss, (ddim.loss_weights(t) * per_sample).mean())


def test_shifted_timesteps_favour_high_noise():
    uniform = DDIM().sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    shifted = DDIM(timestep_shift=3.0).sample_timesteps(20000, generator=torch.Generator().manual_seed(0))
    assert 0 <= shifted.min() and shifted.max() <= 999
    assert abs((uniform >= 750).float().mean().item() - 0.25) < 0.02
    assert abs((shifted >= 750).float().mean().item() - 0.5) < 0.02  # 3u / (1 + 2u) >= 0.75  <=>  u >= 0.5


def test_the_config_is_given_once():
    from faceedittalker.diffusion import DiffusionConfig

    config = DiffusionConfig(prediction_type="v_prediction", clip_sample=True)
    assert DDIM(config).config is config
    assert DDIM(**DDIM(config).config_dict()).config == config
    assert DDIM(config).scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(TypeError):
        DDIM(config, clip_sample=False)
    with pytest.raises(ValueError, match="prediction_type"):
        DDIM(prediction_type="x0")
    with pytest.raises(ValueError, match="loss_weighting"):
        DDIM(loss_weighting="snr")


def test_paper_keeps_the_eps_mse_and_the_option_files_compose():
    from helpers import compose_train_config
    from hydra.utils import instantiate

    paper = instantiate(compose_train_config(["experiment=paper/stage1"]).diffusion)
    assert (paper.config.prediction_type, paper.config.loss_weighting, paper.config.timestep_shift) == (
        "epsilon", "none", 1.0)
    cfg = compose_train_config(["experiment=tiny/stage1", "diffusion=v_minsnr", "unet=diffae_adagn"])
    ddim = instantiate(cfg.diffusion)
    assert (ddim.config.prediction_type, ddim.config.loss_weighting, ddim.config.min_snr_gamma) == (
        "v_prediction", "min_snr", 5.0)
    assert ddim.config.clip_sample is False  # the tiny experiment's own setting still applies on top
    assert cfg.unet.zsem_adagn and cfg.unet.zsem_cross_attention and cfg.unet.base_channels == 32


def gaussian_denoiser(ddim: DDIM, mean: float = 0.3, std: float = 0.5):
    """The exact eps for data ~ N(mean, std^2): E[eps | z_t] = sqrt(1 - a) (z_t - sqrt(a) mean) / (a std^2 + 1 - a).
    Its ODE maps z_t to z_0 = mean + std (z_t - sqrt(a) mean) / sqrt(a std^2 + 1 - a) (the standardised value is
    constant along the flow), so every solver can be checked against the exact solution."""
    alphas = ddim.alphas_cumprod.double()

    def eps(z, t):
        a = alphas[torch.as_tensor(t).long()]
        return ((1 - a).sqrt() * (z.double() - a.sqrt() * mean) / (a * std**2 + 1 - a)).float()

    def solution(z_t, t):  # the ODE's clean end point from z_t at timestep t
        a = alphas[t]
        return mean + std * (z_t.double() - a.sqrt() * mean) / (a * std**2 + 1 - a).sqrt()

    def noised(z0, t):  # the ODE's state at timestep t from the clean z0
        a = alphas[t]
        return a.sqrt() * mean + (a * std**2 + 1 - a).sqrt() * (z0.double() - mean) / std

    return eps, solution, noised


def test_trailing_grids_start_at_the_last_timestep_whatever_the_steps():
    ddim = DDIM(timestep_spacing="trailing")
    assert ddim.timesteps(7).tolist() == [999, 856, 713, 570, 428, 285, 142]
    assert ddim.timesteps(50)[0] == 999 and DDIM().timesteps(7)[0] == 852  # leading: the start moves with N
    eps, _, noised = gaussian_denoiser(ddim)
    z0 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(10)) * 2 - 1
    # Inverting with more steps converges on the ODE's exact state at t = 999, where every trailing grid starts.
    errors = [(ddim.invert(eps, z0, n).double() - noised(z0, 999)).abs().max().item() for n in (20, 100, 500)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < errors[0] / 20  # first order: error ~ 1 / N
    with pytest.raises(ValueError, match="dividing 1000"):
        ddim.invert(eps, z0, 7)  # diffusers' inverse step is on a trailing grid only when N divides T


@pytest.mark.parametrize("solver, order", [("dpmsolver++", 2), ("unipc", 3)])
def test_multistep_solvers_follow_the_ode_closer_than_ddim(solver, order):
    ddim = DDIM(timestep_spacing="trailing")
    other = DDIM(timestep_spacing="trailing", solver=solver, solver_order=order)
    eps, solution, _ = gaussian_denoiser(ddim)
    z_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(12))
    exact = solution(z_T, 999)
    for steps, factor in ((10, 0.8), (20, 0.5), (50, 0.25)):
        ddim_error = (ddim.sample(eps, z_T, steps).double() - exact).abs().max()
        solver_error = (other.sample(eps, z_T, steps).double() - exact).abs().max()
        assert solver_error < factor * ddim_error, (steps, solver_error, ddim_error)
    with pytest.raises(ValueError, match="trailing"):
        DDIM(solver="unipc")  # UniPC's own grid is DDIM's only with trailing spacing
    with pytest.raises(ValueError, match="solver"):
        DDIM(solver="euler")


def test_a_model_folder_with_refused_sampler_settings_is_one_clear_error(tiny_model, tmp_path):
    import json
    import shutil

    from faceedittalker.errors import InputError
    from faceedittalker.models.talking_head import TalkingHeadModel

    for change, message in (({"diffusion": {"solver": "euler"}}, "solver"),
                            ({"diffusion": {"timestep_spacing": "trailing"}, "invert_steps": 7}, "must divide")):
        folder = tmp_path / message.replace(" ", "_")
        shutil.copytree(tiny_model / "video_model", folder)
        config = json.loads((folder / "talking_head.json").read_text())
        config["diffusion"].update(change.pop("diffusion"))
        config.update(change)
        (folder / "talking_head.json").write_text(json.dumps(config))
        with pytest.raises(InputError, match=message):
            TalkingHeadModel.from_pretrained(folder)
