"""Train the independent judge of the synthetic world on rendered faces and their truth (never on z_sem).

    python scripts/train_judge.py output=runs/judge-32px [resolution=32 count=10000 steps=6000 channels=[...]]

Renders `count` + `held_out` faces with random pose, jaw opening and zoom (metrics/judge.py), fits a small CNN
for the clearly drawn attributes and the inner-lip opening, and writes the folder with its held-out balanced
accuracy per attribute and mouth-opening r in judge.json; prints them.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.judge import fit_and_save_judge


@hydra.main(config_path=str(CONFIGS_DIR), config_name="train_judge", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.resolution < 16 or cfg.resolution % 16:
        raise InputError(f"resolution must be a multiple of 16 (the judge halves it four times), got {cfg.resolution}")
    if not 0 <= float(cfg.blur) <= 1:
        raise InputError(f"blur is a share of the training faces, in [0, 1], got {cfg.blur}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    report = fit_and_save_judge(cfg.output, cfg.resolution, cfg.count, cfg.held_out, cfg.steps, cfg.batch_size,
                                cfg.lr, cfg.seed, cfg.overwrite, float(cfg.blur), tuple(cfg.channels))  # fmt: skip
    held_out = report["held_out"]
    print(f"{'attribute':<20}{'balanced acc':>13}")
    for name, value in held_out["balanced_accuracy"].items():
        print(f"{name:<20}{'-' if value is None else f'{value:.3f}':>13}")
    print(f"{'mean':<20}{held_out['mean_balanced_accuracy']:>13.3f}")
    print(f"mouth opening: r = {held_out['opening_pearson_r']}, mean error {held_out['opening_mae']:.4f} "
          f"(std of the truth {held_out['opening_std']:.4f}) image heights; {report['seconds']['total']} s")
    soft = report["held_out_blurred"]
    print(f"the same faces blurred (sigma 1 px): mean {soft['mean_balanced_accuracy']:.3f}, mouth opening r = "
          f"{soft['opening_pearson_r']}")
    print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()
