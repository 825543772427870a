"""Build a stage's modules from the configs, print parameter counts, optionally time one training step.

    python scripts/model_summary.py experiment=paper/stage1 autoencoder.random_init=true forward_backward=true
"""

from __future__ import annotations

import time

import hydra
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.stages import STAGES


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@hydra.main(config_path=str(CONFIGS_DIR), config_name="summary", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.stage != 1:  # later stages derive their modules from data and a stage-1 export
        raise InputError("model_summary.py covers stage=1 (stage 2 is one linear layer over z_sem)")
    stage = STAGES[cfg.stage](cfg)
    modules = stage.build_modules()
    for kind, group in (("trainable", modules.trainable), ("frozen", modules.frozen)):
        for name, module in group.items():
            print(f"{name:>18} ({kind}): {count(module) / 1e6:8.2f} M parameters")
    print(f"{'trainable total':>18}: {sum(count(m) for m in modules.trainable.values()) / 1e6:8.2f} M")
    if not cfg.forward_backward:
        return
    all_modules = {**modules.trainable, **modules.frozen}
    for module in all_modules.values():
        module.to(cfg.device)
    images = torch.rand(cfg.batch_size, 3, cfg.resolution, cfg.resolution, device=cfg.device) * 2 - 1
    start = time.perf_counter()
    loss = stage.training_step({"image": images}, all_modules)
    loss.backward()
    grads = sum(p.grad is not None for m in modules.trainable.values() for p in m.parameters())
    print(f"one training step at batch {cfg.batch_size}: loss {loss.item():.4f}, {grads} gradients, "
          f"{time.perf_counter() - start:.1f} s on {cfg.device}")


if __name__ == "__main__":
    main()
