"""FID: torchmetrics' Frechet distance against scipy, zero for a set with itself, the missing-weights path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from media_fixtures import astronaut
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from faceedittalker.metrics.fid import (
    INCEPTION_WEIGHTS_FILE,
    build_inception_fid,
    feature_fid,
    frames_to_tensor,
    set_fid,
)


def scipy_frechet(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    sigma1, sigma2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root))


def test_frechet_distance_matches_scipy():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    fake = 0.7 * torch.randn(200, 16, generator=generator, dtype=torch.float64) + 0.3
    expected = scipy_frechet(real.numpy(), fake.numpy())
    assert expected > 1
    assert feature_fid(real, fake) == pytest.approx(expected, rel=1e-6)
    assert feature_fid(real, real) == pytest.approx(0, abs=1e-8)


class PooledColours(nn.Module):
    """A stand-in feature extractor for uint8 frames (mean colour of a 4 x 4 grid): 48 features."""

    num_features = 48

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(images.double() / 255, 4).flatten(1)


def test_set_fid_of_a_set_with_itself_is_zero():
    image = astronaut()
    videos = [np.stack([image[10 * i: 10 * i + 256, 10 * j: 10 * j + 256] for i in range(8)]) for j in range(8)]
    metric = FrechetInceptionDistance(feature=PooledColours())
    assert set_fid(metric, videos, videos) == pytest.approx(0, abs=1e-8)
    flipped = [video[:, ::-1] for video in videos]
    assert set_fid(metric, flipped, videos) > 1e-3
    assert frames_to_tensor(videos[0]).shape == (8, 3, 256, 256)


def test_missing_inception_weights_skip_with_reason(tmp_path):
    metric, reason = build_inception_fid(tmp_path)
    assert metric is None
    assert reason.startswith("FID skipped") and str(tmp_path / INCEPTION_WEIGHTS_FILE) in reason
    assert "\n" not in reason


@pytest.mark.slow
def test_inception_path_with_random_weights(tmp_path):
    """The real loading and feature path (weights_only load, torch-fidelity's TF-Inception, uint8 frames resized to
    299) on a randomly initialised state dict saved under the standard file name."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as inception

    with mock.patch.object(inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict"):
        state = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    torch.save(state, tmp_path / INCEPTION_WEIGHTS_FILE)
    metric, reason = build_inception_fid(tmp_path)
    assert reason is None
    image = astronaut()
    videos = [np.stack([image[8 * i: 8 * i + 128, 8 * j: 8 * j + 128] for i in range(3)]) for j in range(2)]
    assert abs(set_fid(metric, videos, videos)) < 1e-3 * max(1.0, float(metric.real_features_cov_sum.trace()))
