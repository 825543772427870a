"""Train one stage of FaceEditTalker (Alg. 1-3) with Hydra + Accelerate.

    faceedittalker-train experiment=tiny/stage1                 # or: python scripts/train.py experiment=tiny/stage1
    faceedittalker-train experiment=tiny/stage2                 # reads runs/tiny-stage1/export
    faceedittalker-train experiment=tiny/stage3                 # video model (eps_theta + E_ldm)
    faceedittalker-train experiment=tiny/landmarks              # P_ldm
    accelerate launch scripts/train.py experiment=paper/stage1 data.root=/datasets/ffhq
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.stages import STAGES
from faceedittalker.training.trainer import Trainer

log = logging.getLogger("train")


@hydra.main(config_path=str(CONFIGS_DIR), config_name="train", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.stage not in STAGES:
        raise InputError(f"stage={cfg.stage} is not available; choose one of {sorted(STAGES)}")
    run_dir = HydraConfig.get().runtime.output_dir
    export_dir = Trainer(cfg, STAGES[cfg.stage](cfg), run_dir).fit()
    log.info("done: models exported to %s", export_dir)


if __name__ == "__main__":
    main()
