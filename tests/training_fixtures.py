"""A stage-1 variant whose loss is a function of the batch alone, for tests that compare training runs.

Stage 1 draws t and eps from the process RNG, so two runs that split one global batch differently (one rank vs two,
one batch vs accumulated micro-batches) see different noise and cannot be compared weight by weight. Here every
sample's t and eps come from a generator seeded with its image index: the same samples give the same loss, however
they are split. Run as a script (`python tests/training_fixtures.py RUN_DIR OVERRIDE...`, e.g. under
`torch.distributed.run`) it trains that stage with the real configs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from helpers import compose_train_config  # noqa: E402

from faceedittalker.stages.stage1 import Stage1  # noqa: E402
from faceedittalker.training.trainer import Trainer  # noqa: E402


class IndexedNoiseStage1(Stage1):
    """Stage 1 with t and eps fixed per image index (Eq. 11 otherwise unchanged)."""

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        z0 = modules["autoencoder"].encode(batch["image"])  # (B, C, h, w)
        generators = [torch.Generator().manual_seed(int(i)) for i in batch["index"]]
        t = torch.stack([torch.randint(0, self.diffusion.num_train_timesteps, (), generator=g) for g in generators])
        noise = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in generators]).to(z0)
        z_t = self.diffusion.scheduler.add_noise(z0, noise, t)
        z_sem = modules["semantic_encoder"](batch["image"])
        # Per-sample means averaged: the loss of a batch is the mean of its samples' losses, however it is split.
        return F.mse_loss(modules["unet"](z_t, t.to(z0.device), z_sem).float(), noise.float())


def train_indexed(run_dir: str | Path, overrides: list[str]) -> Trainer:
    cfg = compose_train_config(overrides)
    trainer = Trainer(cfg, IndexedNoiseStage1(cfg), run_dir)
    trainer.fit()
    return trainer


if __name__ == "__main__":
    train_indexed(sys.argv[1], sys.argv[2:])
