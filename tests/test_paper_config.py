"""`experiment=paper` builds the full-size models of Table I; one training step runs on CPU (slow)."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_train_config

from faceedittalker.stages import STAGES


def test_paper_experiment_carries_table_1():
    cfg = compose_train_config(["stage=1", "experiment=paper"])
    assert (cfg.seed, cfg.resolution, cfg.trainer.batch_size) == (0, 512, 16)
    assert cfg.trainer.optimizer.lr == pytest.approx(1e-4)
    assert cfg.diffusion.num_train_timesteps == 1000
    assert cfg.semantic_encoder.z_dim == 512 and cfg.unet.time_embed_dim == 512
    assert cfg.autoencoder.kind == "vae"


@pytest.mark.slow
def test_paper_models_instantiate_at_full_size_and_take_one_step_on_cpu(tmp_path):
    cfg = compose_train_config(["stage=1", "experiment=paper", "autoencoder.random_init=true",
                                f"autoencoder.pretrained={tmp_path}/no-vae"])
    stage = STAGES[1](cfg)
    modules = stage.build_modules()
    counts = {name: sum(p.numel() for p in m.parameters())
              for name, m in {**modules.trainable, **modules.frozen}.items()}
    print({k: f"{v / 1e6:.1f}M" for k, v in counts.items()})
    assert 120e6 < counts["unet"] < 170e6  # DiffAE FFHQ-256 UNet: 138M
    assert 25e6 < counts["semantic_encoder"] < 60e6
    assert 80e6 < counts["autoencoder"] < 86e6  # SD-VAE
    assert modules.trainable["unet"].config.in_channels == 4 and modules.trainable["unet"].config.sample_size == 64
    loss = stage.training_step({"image": torch.rand(1, 3, 512, 512) * 2 - 1}, {**modules.trainable, **modules.frozen})
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in modules.trainable["semantic_encoder"].parameters())
