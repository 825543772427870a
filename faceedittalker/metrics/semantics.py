"""What z_sem carries: the stage-1 reconstruction check, how much the denoiser relies on z_sem, and the balanced
accuracy of attribute predictions (stage 2)."""

from __future__ import annotations

import torch

from faceedittalker.metrics.image import psnr
from faceedittalker.models.feature_space import ImageFeatureSpace


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor, names: list[str]) -> dict[str, float | None]:
    """Per attribute (column), the mean of the true-positive and true-negative rates (chance = 0.5) of boolean
    predictions (N, K) against boolean truth (N, K); None where the truth has a single class."""
    result: dict[str, float | None] = {}
    for i, name in enumerate(names):
        positives, negatives = truth[:, i], ~truth[:, i]
        if positives.all() or negatives.all():
            result[name] = None
            continue
        tpr = predicted[positives, i].float().mean()
        tnr = (~predicted[negatives, i]).float().mean()
        result[name] = round(float(tpr + tnr) / 2, 4)
    return result


@torch.no_grad()
def reconstruction_check(space: ImageFeatureSpace, images: torch.Tensor, seed: int = 0,
                         steps: int | None = None) -> dict:
    """The property the method relies on: x -> (z_sem, Z_T) -> x reconstructs x, while decoding random noise
    with the same z_sem only keeps what z_sem carries. Returns both PSNRs (dB, mean over images), how much the
    denoiser uses z_sem (`z_sem_use`), and the three image batches (input, reconstruction, random decode)."""
    z_sem = space.encode_semantic(images)
    recon = space.decode(space.encode_stochastic(images, z_sem, steps), z_sem, steps)
    noise = torch.randn(space.latent_shape(len(images)), generator=torch.Generator().manual_seed(seed))
    random_decode = space.decode(noise.to(images.device), z_sem, steps)
    return {"psnr_inversion": psnr(recon, images).mean().item(),
            "psnr_random": psnr(random_decode, images).mean().item(),
            "z_sem_use": z_sem_use(space, images, z_sem, seed=seed),
            "images": (images, recon, random_decode)}


@torch.no_grad()
def z_sem_use(space: ImageFeatureSpace, images: torch.Tensor, z_sem: torch.Tensor, t: int = 500,
              seed: int = 0) -> float:
    """How much the denoiser relies on z_sem: the relative increase of its prediction MSE (eps, v or z0, as it
    was trained) at timestep t when every image gets another image's z_sem (0 = z_sem is ignored). Needs at
    least two images."""
    if len(images) < 2:
        return float("nan")
    z0 = space.autoencoder.encode(images)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(z0.device)
    timesteps = torch.full((len(z0),), t, device=z0.device)
    z_t = space.ddim.scheduler.add_noise(z0, noise, timesteps)
    target = space.ddim.target(z0, noise, timesteps)
    right = (space.unet(z_t, timesteps, z_sem) - target).pow(2).mean()
    swapped = (space.unet(z_t, timesteps, z_sem.roll(1, dims=0)) - target).pow(2).mean()
    return (swapped / right - 1).item()
