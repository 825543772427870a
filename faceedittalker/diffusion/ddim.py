"""Training noise, conditional DDIM sampling (Eq. 10) and the stochastic encoder (DDIM inversion, Eq. 5).

Built on diffusers' `DDIMScheduler` / `DDIMInverseScheduler`. Conventions (DiffAE's):
- training: t ~ U{0, ..., T-1}, eps prediction, per-element mean MSE (Eq. 11 / 13);
- sampling with N steps visits t_{N-1} > ... > t_0 = 0 ("leading" spacing) and ends on the clean sample;
- inversion is the mirror image: clean -> t_0 -> ... -> t_{N-1}, each step re-using the noise predicted at the
  *current* point, x_next = sqrt(a_next) * x0_hat + sqrt(1 - a_next) * eps(x_cur, t_cur), exactly DiffAE's
  `ddim_reverse_sample` rule. Inverting and sampling with the same N therefore meet at the same Z_T.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMInverseScheduler, DDIMScheduler
from tqdm.auto import tqdm

# eps_theta(z_t, t) with the conditions (z_sem, F) already bound.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    """The noise schedule (paper Table I: T = 1000; DiffAE: linear betas 1e-4 .. 0.02, eps prediction)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # Clip the predicted x0 to [-1, 1]: right in pixel space (DiffAE), wrong for VAE latents.
    clip_sample: bool = False


class DDIM:
    """Noise schedule + DDIM sampler + DDIM inverter for a conditional eps-prediction model."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, clip_sample: bool = False):
        self.config = DiffusionConfig(num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample)
        self._scheduler_config = dict(asdict(self.config), prediction_type="epsilon", set_alpha_to_one=True,
                                      steps_offset=0, timestep_spacing="leading")
        self.scheduler = DDIMScheduler(**self._scheduler_config)
        self.alphas_cumprod = self.scheduler.alphas_cumprod  # (T,) float32, on CPU

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    # ----- training (Eq. 11 / 13) ------------------------------------------------------------------------
    def training_loss(self, denoiser: Denoiser, z0: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise z0 at uniform random t and return the eps-MSE of the denoiser."""
        batch = z0.shape[0]
        t = torch.randint(0, self.num_train_timesteps, (batch,), device=z0.device, generator=generator)
        noise = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, generator=generator)
        z_t = self.scheduler.add_noise(z0, noise, t)  # sqrt(a_t) z0 + sqrt(1 - a_t) eps
        return F.mse_loss(denoiser(z_t, t).float(), noise.float())

    # ----- sampling (Eq. 10) -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, denoiser: Denoiser, z_T: torch.Tensor, num_steps: int, progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from Z_T at t_{N-1} down to the clean Z_0."""
        scheduler = DDIMScheduler(**self._scheduler_config)
        scheduler.set_timesteps(num_steps)
        z = z_T
        for t in tqdm(scheduler.timesteps, desc="DDIM sampling", disable=not progress, leave=False):
            eps = denoiser(z, t.to(z.device))
            z = scheduler.step(eps, t, z, eta=0.0).prev_sample
        return z

    # ----- stochastic encoder (Eq. 5, DiffAE inversion) --------------------------------------------------
    @torch.no_grad()
    def invert(self, denoiser: Denoiser, z0: torch.Tensor, num_steps: int, progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM inversion: clean Z_0 -> Z_T at t_{N-1}, conditioned like the sampler."""
        inverse = DDIMInverseScheduler(**self._scheduler_config)
        inverse.set_timesteps(num_steps)
        stride = self.num_train_timesteps // num_steps
        z = z0
        for t_next in tqdm(inverse.timesteps, desc="DDIM inversion", disable=not progress, leave=False):
            # The step to t_next starts at t_next - stride (the clean sample for the first step, where t = 0
            # is the closest model time); its noise is predicted there, as DiffAE does.
            t_current = torch.clamp(t_next - stride, min=0).to(z.device)
            eps = denoiser(z, t_current)
            z = inverse.step(eps, t_next, z).prev_sample
        return z

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The sampling timesteps t_{N-1} > ... > t_0 for `num_steps` DDIM steps."""
        scheduler = DDIMScheduler(**self._scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler.timesteps
