"""What z_sem carries: the stage-1 reconstruction check, how much the denoiser relies on z_sem, a linear probe of
z_sem against labelled attributes (AUC), and the balanced accuracy of attribute predictions (stage 2)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy.stats import rankdata

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


def held_out_split(count: int, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held out) of a random split of `count` items; `fraction` of them held out."""
    if not 0 < fraction < 1 or count < 2:
        raise ValueError("need 0 < fraction < 1 and at least two items to split")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    num_held_out = max(1, round(count * fraction))
    return order[num_held_out:].sort().values, order[:num_held_out].sort().values


def binary_auc(scores: torch.Tensor, truth: torch.Tensor) -> float | None:
    """Area under the ROC curve of real scores (N,) against boolean truth (N,): the probability that a random
    positive scores above a random negative (ties count half; Mann-Whitney). None for a single class."""
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = torch.from_numpy(rankdata(scores.double().numpy()))  # average ranks for ties, 1-based
    rank_sum = ranks[truth.bool()].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def fit_logistic_regression(x: torch.Tensor, labels: torch.Tensor, inverse_regularisation: float = 1.0,
                            max_iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """One class-balanced, L2-regularised logistic regression per label column on features x (N, D) as given.

    labels (N, K) boolean. Each class of each column weighs half of the loss (scikit-learn's
    `class_weight="balanced"`), and the penalty is ||w||^2 / (2 C) on the summed loss (its `C`), solved to
    convergence by L-BFGS on the full batch (the problem is convex). Returns (weight (D, K), bias (K,)), float64."""
    x, y = x.double(), labels.double()
    n = len(x)
    positives = y.sum(0).clamp_min(1)  # (K,)
    negatives = (n - y.sum(0)).clamp_min(1)
    sample_weight = torch.where(y > 0, n / (2 * positives), n / (2 * negatives))  # (N, K)
    weight = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(y.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=max_iterations, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        logits = x @ weight + bias  # (N, K)
        data = (sample_weight * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = (data + weight.pow(2).sum() / (2 * inverse_regularisation)) / n
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def fit_logistic_probe(features: torch.Tensor, labels: torch.Tensor, inverse_regularisation: float = 1.0,
                       max_iterations: int = 200) -> Callable[[torch.Tensor], torch.Tensor]:
    """`fit_logistic_regression` on the standardised features (N, D); returns a function from features (M, D)
    to logits (M, K)."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    weight, bias = fit_logistic_regression((features - mean) / std, labels, inverse_regularisation, max_iterations)
    return lambda new: ((new - mean) / std).double() @ weight + bias


def linear_probe_auc(features: torch.Tensor, labels: torch.Tensor, names: list[str], held_out: torch.Tensor,
                     inverse_regularisation: float = 1.0) -> dict[str, float | None]:
    """How linearly a feature (z_sem, pixels) predicts each attribute: a class-balanced logistic regression
    trained on all items but `held_out` (indices), then the per-attribute AUC on the held-out items (0.5 =
    chance, 1 = separable); None where the training or held-out labels have a single class."""
    mask = torch.zeros(len(features), dtype=torch.bool)
    mask[held_out] = True
    labels = labels.bool()
    probe = fit_logistic_probe(features[~mask].float(), labels[~mask], inverse_regularisation)
    scores = probe(features[mask].float())  # (M, K)
    result: dict[str, float | None] = {}
    for i, name in enumerate(names):
        train_column = labels[~mask, i]
        single_class = bool(train_column.all()) or not bool(train_column.any())
        auc = None if single_class else binary_auc(scores[:, i], labels[mask, i])
        result[name] = None if auc is None else round(auc, 4)
    return result


def pooled_pixels(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """The thumbnail baseline of a probe: images (N, 3, R, R) average-pooled to size x size -> (N, 3 size^2)."""
    return F.adaptive_avg_pool2d(images.float(), size).flatten(1)


def principal_components(features: torch.Tensor, count: int = 2) -> torch.Tensor:
    """The centred features (N, D) projected on their first `count` principal axes, (N, count), in order of
    decreasing variance (Fig. 6's PCA of z_sem); each axis's sign is fixed so that its largest loading is
    positive, so that the picture does not flip between runs."""
    centred = features.double() - features.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # rows of vh: the principal axes
    axes = vh[:count]
    largest = axes.gather(1, axes.abs().argmax(1, keepdim=True))
    axes = axes * largest.sign()
    return (centred @ axes.T).to(features.dtype)


def mean_auc(scores: dict[str, float | None]) -> float | None:
    """The mean of the defined AUCs of a probe (None if there is none)."""
    values = [v for v in scores.values() if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def probe_against_pixels(z_sem: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                         held_out: torch.Tensor, inverse_regularisation: float = 1.0, pixel_size: int = 8) -> dict:
    """The probe of scripts/probe_z_sem.py: per-attribute held-out AUC of z_sem (N, Z) and, as the baseline, of
    the images (N, 3, R, R) pooled to pixel_size^2, with their means: {"z_sem", "pixels", "mean"}."""
    result = {
        "z_sem": linear_probe_auc(z_sem, labels, names, held_out, inverse_regularisation),
        "pixels": linear_probe_auc(pooled_pixels(images, pixel_size), labels, names, held_out,
                                   inverse_regularisation),
    }
    result["mean"] = {kind: mean_auc(result[kind]) for kind in ("z_sem", "pixels")}
    return result
