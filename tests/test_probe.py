"""The linear probe of z_sem (AUC per attribute on held-out faces) and scripts/probe_z_sem.py."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_script

from faceedittalker.diffusion import DDIM
from faceedittalker.metrics.semantics import binary_auc, held_out_split, linear_probe_auc, pooled_pixels
from faceedittalker.models.autoencoder import IdentityAutoencoder
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.unet import ConditionalUNet
from faceedittalker.synthetic.sets import RENDERED_ATTRIBUTES


def test_auc_is_the_probability_that_a_positive_outranks_a_negative():
    truth = torch.tensor([1, 0, 1, 0, 0], dtype=torch.bool)
    # pairs (positive, negative): 0.9 > all three; 0.4 > 0.1 and ties 0.4 -> 1 + 1 + 1 + 0.5 + 0 + 1 = 4.5 of 6
    assert binary_auc(torch.tensor([0.9, 0.4, 0.4, 0.1, 0.5]), truth) == 4.5 / 6
    assert binary_auc(torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0]), truth) == 0.0
    assert binary_auc(torch.rand(5), torch.zeros(5, dtype=torch.bool)) is None


def test_held_out_split_is_disjoint_and_covers_everything():
    train, held_out = held_out_split(50, 0.2, seed=1)
    assert len(held_out) == 10 and len(train) == 40
    assert sorted(torch.cat([train, held_out]).tolist()) == list(range(50))
    assert torch.equal(held_out_split(50, 0.2, seed=1)[1], held_out)


def test_probe_separates_a_linear_attribute_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    direction = torch.randn(16, generator=generator)
    linear = features @ direction > 1.0  # imbalanced (about 20 % positive) but separable
    noise = torch.rand(400, generator=generator) < 0.3  # unrelated to the features
    labels = torch.stack([linear, noise], dim=1)
    _, held_out = held_out_split(400, 0.25, seed=0)
    auc = linear_probe_auc(features, labels, ["linear", "noise"], held_out)
    assert auc["linear"] > 0.97
    assert 0.3 < auc["noise"] < 0.7
    # A constant training column has no probe.
    assert linear_probe_auc(features, torch.zeros(400, 1), ["never"], held_out) == {"never": None}


def test_pooled_pixels_are_the_thumbnail_means():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    pooled = pooled_pixels(images, 8)
    assert pooled.shape == (2, 3 * 64)
    assert pooled[0, 0].item() == images[0, 0, :2, :2].mean().item()


def write_random_export(folder, resolution=16):
    encoder = SemanticEncoder(image_size=resolution, base_channels=8, channel_mult=(1, 2), layers_per_block=1,
                              attention_resolutions=(), attention_head_dim=8, norm_num_groups=4, z_dim=12)
    unet = ConditionalUNet(in_channels=3, out_channels=3, sample_size=resolution, base_channels=8,
                           channel_mult=(1, 2), layers_per_block=1, attention_resolutions=(), attention_head_dim=8,
                           norm_num_groups=4, dropout=0.0, time_embed_dim=16, z_dim=12, cross_attention_dim=12,
                           z_tokens=2)
    space = ImageFeatureSpace(IdentityAutoencoder(), encoder, unet, DDIM(prediction_type="v_prediction"), resolution)
    folder.mkdir(parents=True)
    encoder.save_pretrained(folder / "semantic_encoder")
    unet.save_pretrained(folder / "unet")
    space.save_config(folder)
    return folder


@pytest.mark.slow  # a minute of CPU: generates 60 faces, loads a model, fits two probes
def test_probe_script_writes_per_attribute_aucs_for_z_sem_and_pixels(tmp_path):
    export = write_random_export(tmp_path / "run" / "export")
    result = run_script("probe_z_sem.py", f"model={export}", f"cache_dir={tmp_path / 'cache'}", "count=60", timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "probe_z_sem.json").read_text())
    assert set(report["z_sem"]) == set(RENDERED_ATTRIBUTES) == set(report["pixels"])
    assert report["settings"]["faces"] == 60 and report["settings"]["held_out"] == 12
    assert report["settings"]["z_dim"] == 12
    for kind in ("z_sem", "pixels"):
        values = [v for v in report[kind].values() if v is not None]
        assert values and all(0 <= v <= 1 for v in values)
        assert abs(report["mean"][kind] - sum(values) / len(values)) < 1e-3
    assert "mean AUC" in result.stdout and "Eyeglasses" in result.stdout


def test_probe_script_rejects_a_folder_that_is_not_a_model(tmp_path):
    result = run_script("probe_z_sem.py", f"model={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: not a stage-1 model folder")
