"""Training noise, conditional DDIM sampling (Eq. 10) and the stochastic encoder (DDIM inversion, Eq. 5).

Built on diffusers' `DDIMScheduler` / `DDIMInverseScheduler`. Conventions (DiffAE's, the paper's defaults):
- training: t ~ U{0, ..., T-1}, eps prediction, per-element mean MSE (Eq. 11 / 13);
- sampling with N steps visits t_{N-1} > ... > t_0 = 0 ("leading" spacing) and ends on the clean sample;
- inversion is the mirror image: clean -> t_0 -> ... -> t_{N-1}, each step re-using the noise predicted at the
  *current* point, x_next = sqrt(a_next) * x0_hat + sqrt(1 - a_next) * eps(x_cur, t_cur), exactly DiffAE's
  `ddim_reverse_sample` rule. Inverting and sampling with the same N therefore meet at the same Z_T.

Beyond the paper (for small models whose z_sem must carry the face): the network may predict v = sqrt(a) eps -
sqrt(1 - a) z0 (Salimans & Ho 2022) or z0 itself, the loss may be Min-SNR weighted (Hang et al. 2023) and training
timesteps may be shifted towards high noise. With eps-MSE an error in x0 at timestep t costs SNR(t) times less than
at t = 0, so at high noise, where only z_sem can say what the face is, E_sem gets almost no gradient; each of these
options moves weight there. One `DiffusionConfig` drives training, sampling and inversion alike, so a model is
always sampled and inverted with the parametrisation it was trained for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from tqdm.auto import tqdm

# The network's output for (z_t, t) with the conditions (z_sem, F) already bound: eps, v or z0 as configured.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
LOSS_WEIGHTINGS = ("none", "min_snr")
TIMESTEP_SPACINGS = ("leading", "trailing")
SOLVERS = ("ddim", "dpmsolver++", "unipc")


@dataclass
class DiffusionConfig:
    """The noise schedule (paper Table I: T = 1000; DiffAE: linear betas 1e-4 .. 0.02, eps prediction) and the
    training objective."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    # Clip the predicted x0 to [-1, 1]: right in pixel space (DiffAE), wrong for VAE latents.
    clip_sample: bool = False
    # What the network predicts: epsilon (the paper) | v_prediction | sample (z0).
    prediction_type: str = "epsilon"
    # none: plain MSE of the prediction (the paper) | min_snr: each timestep's loss weighted so that its
    # x0-error weight is min(SNR(t), min_snr_gamma) (Hang et al. 2023; their gamma = 5).
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    # Training timesteps: t = T * s u / (1 + (s - 1) u), u ~ U(0, 1) (the SD3 shift); 1 = uniform (the paper),
    # s > 1 draws more high-noise timesteps (s = 3: half of them above t = 750).
    timestep_shift: float = 1.0
    # Generation (Eq. 10) and inversion (Eq. 5) beyond the paper's DDIM. The grid of N timesteps: "leading"
    # t = 0, T/N, ..., (N-1) T/N (DiffAE's), or "trailing" (T-1, ..., T/N - 1: every grid starts at T-1, so a Z_T
    # inverted with any number of steps dividing T can be sampled with any other). The sampler: "ddim", "dpmsolver++"
    # (DPM-Solver++, Lu et al. 2022) or "unipc" (UniPC, Zhao et al. 2023; trailing spacing only), multistep
    # solvers of the same ODE on the same grid, of order `solver_order`. Inversion is DDIM in every case.
    timestep_spacing: str = "leading"
    solver: str = "ddim"
    solver_order: int = 2

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"diffusion.prediction_type must be one of {PREDICTION_TYPES}, "
                             f"got {self.prediction_type!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"diffusion.loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"diffusion.timestep_spacing must be one of {TIMESTEP_SPACINGS}, "
                             f"got {self.timestep_spacing!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"diffusion.solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver == "unipc" and self.timestep_spacing != "trailing":  # its own grid is DDIM's only there
            raise ValueError("diffusion.solver=unipc needs diffusion.timestep_spacing=trailing")
        if self.solver_order not in (1, 2, 3):
            raise ValueError(f"diffusion.solver_order must be 1, 2 or 3, got {self.solver_order}")
        if self.min_snr_gamma <= 0 or self.timestep_shift <= 0:
            raise ValueError("diffusion.min_snr_gamma and diffusion.timestep_shift must be positive")

    def scheduler_config(self) -> dict:
        """The keyword arguments of diffusers' DDIM schedulers for this schedule and parametrisation."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end, clip_sample=self.clip_sample,
                    prediction_type=self.prediction_type, set_alpha_to_one=True, steps_offset=0,
                    timestep_spacing=self.timestep_spacing)


class DDIM:
    """Noise schedule + training objective + DDIM sampler + DDIM inverter for a conditional denoiser.

    `DDIM(config)` or `DDIM(**fields)` (the fields of `DiffusionConfig`, as Hydra and saved models pass them).
    """

    def __init__(self, config: DiffusionConfig | None = None, **fields):
        if config is not None and fields:
            raise TypeError("give either a DiffusionConfig or its fields, not both")
        self.config = config if config is not None else DiffusionConfig(**fields)
        self._scheduler_config = self.config.scheduler_config()
        self.scheduler = DDIMScheduler(**self._scheduler_config)
        self.alphas_cumprod = self.scheduler.alphas_cumprod  # (T,) float32, on CPU

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def config_dict(self) -> dict:
        """The fields to save with a model; `DDIM(**config_dict())` rebuilds it."""
        return asdict(self.config)

    # ----- training (Eq. 11 / 13) ------------------------------------------------------------------------
    def sample_timesteps(self, batch: int, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps (batch,): uniform, or shifted towards high noise by `timestep_shift`."""
        T, shift = self.num_train_timesteps, self.config.timestep_shift
        if shift == 1.0:
            return torch.randint(0, T, (batch,), device=device, generator=generator)
        u = torch.rand((batch,), device=device, generator=generator)
        return (T * shift * u / (1 + (shift - 1) * u)).long().clamp(max=T - 1)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio a_t / (1 - a_t) at integer timesteps t."""
        a = self.alphas_cumprod.to(t.device)[t]
        return a / (1 - a)

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for z_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise."""
        if self.config.prediction_type == "epsilon":
            return noise
        if self.config.prediction_type == "sample":
            return z0
        return self.scheduler.get_velocity(z0, noise, t)  # sqrt(a_t) noise - sqrt(1 - a_t) z0

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weights (batch,) of the prediction MSE. Min-SNR: the MSE of eps, v and z0 weighs an error
        in x0 by SNR, SNR + 1 and 1, so dividing min(SNR, gamma) by those gives every parametrisation the
        same x0 weighting, min(SNR, gamma)."""
        if self.config.loss_weighting == "none":
            return torch.ones(t.shape, device=t.device)
        snr = self.snr(t).float()
        weight = snr.clamp(max=self.config.min_snr_gamma)
        if self.config.prediction_type == "epsilon":
            return weight / snr
        if self.config.prediction_type == "v_prediction":
            return weight / (snr + 1)
        return weight

    def training_loss(self, denoiser: Denoiser, z0: torch.Tensor, generator: torch.Generator | None = None,
                      pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Noise z0 at training timesteps and return the (weighted) MSE of the denoiser's prediction;
        with the defaults, the paper's eps-MSE at uniform t. `pixel_weights`, broadcastable to z0, weigh the
        squared error element-wise and are normalised per sample (a weighted mean), so the loss keeps its scale."""
        batch = z0.shape[0]
        t = self.sample_timesteps(batch, z0.device, generator)
        noise = torch.randn(z0.shape, device=z0.device, dtype=z0.dtype, generator=generator)
        z_t = self.scheduler.add_noise(z0, noise, t)  # sqrt(a_t) z0 + sqrt(1 - a_t) eps
        error = (denoiser(z_t, t).float() - self.target(z0, noise, t).float()).pow(2)  # (B, [F,] C, h, w)
        if pixel_weights is None:
            per_sample = error.flatten(1).mean(dim=1)  # (B,)
        else:
            weights = pixel_weights.float().expand_as(error)
            per_sample = (error * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)  # (B,)
        return (self.loss_weights(t) * per_sample).mean()

    # ----- sampling (Eq. 10) -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, denoiser: Denoiser, z_T: torch.Tensor, num_steps: int, progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM (eta = 0), DPM-Solver++ or UniPC from Z_T at t_{N-1} down to the clean Z_0."""
        c = self.config
        if c.solver == "ddim":
            scheduler = DDIMScheduler(**self._scheduler_config)
            scheduler.set_timesteps(num_steps)
            step = lambda prediction, t, z: scheduler.step(prediction, t, z, eta=0.0).prev_sample  # noqa: E731
        else:  # on DDIM's grid (so inversion and sampling share it), ending on the clean sample
            shared = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")
            schedule = {key: self._scheduler_config[key] for key in shared}
            schedule.update(solver_order=c.solver_order, lower_order_final=True, final_sigmas_type="zero")
            if c.solver == "dpmsolver++":
                scheduler = DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++")
                scheduler.set_timesteps(timesteps=self.timesteps(num_steps).tolist())
            else:
                scheduler = UniPCMultistepScheduler(**schedule, timestep_spacing="trailing")
                scheduler.set_timesteps(num_steps)
            step = lambda prediction, t, z: scheduler.step(prediction, t, z).prev_sample  # noqa: E731
        z = z_T
        for t in tqdm(scheduler.timesteps, desc=f"{c.solver} sampling", disable=not progress, leave=False):
            prediction = denoiser(z, t.to(z.device))  # eps, v or z0: the scheduler converts
            z = step(prediction, t, z)
        return z

    # ----- stochastic encoder (Eq. 5, DiffAE inversion) --------------------------------------------------
    @torch.no_grad()
    def invert(self, denoiser: Denoiser, z0: torch.Tensor, num_steps: int, progress: bool = False) -> torch.Tensor:
        """Deterministic DDIM inversion: clean Z_0 -> Z_T at t_{N-1}, conditioned like the sampler."""
        if self.config.timestep_spacing == "trailing" and self.num_train_timesteps % num_steps:
            # diffusers' inverse step reads the current alpha at t_next - T // N: on the grid only when N divides T
            raise ValueError(f"trailing DDIM inversion needs steps dividing {self.num_train_timesteps}, "
                             f"got {num_steps}")
        inverse = DDIMInverseScheduler(**self._scheduler_config)
        inverse.set_timesteps(num_steps)
        z, t_current = z0, torch.tensor(0)
        for t_next in tqdm(inverse.timesteps, desc="DDIM inversion", disable=not progress, leave=False):
            # The step to t_next starts at the previous grid point (the clean sample for the first step, where
            # t = 0 is the closest model time); its noise is predicted there, as DiffAE does. The inverse
            # scheduler reads the alpha of that current point for the conversion of v or z0 into (x0, eps).
            prediction = denoiser(z, t_current.to(z.device))
            z = inverse.step(prediction, t_next, z).prev_sample
            t_current = t_next
        return z

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The sampling timesteps t_{N-1} > ... > t_0 for `num_steps` DDIM steps."""
        scheduler = DDIMScheduler(**self._scheduler_config)
        scheduler.set_timesteps(num_steps)
        return scheduler.timesteps
