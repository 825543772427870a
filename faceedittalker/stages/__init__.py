"""Training stages (Alg. 1-3), selected by the plain config key `stage` (stage 3 also by `stage3.target`)."""

from collections.abc import Callable

from omegaconf import DictConfig

from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.stages.stage1 import Stage1
from faceedittalker.stages.stage2 import Stage2
from faceedittalker.stages.stage3 import LandmarkStage, VideoStage, build_stage3

STAGES: dict[int, Callable[[DictConfig], Stage]] = {1: Stage1, 2: Stage2, 3: build_stage3}

__all__ = ["STAGES", "Stage", "StageModules", "Stage1", "Stage2", "VideoStage", "LandmarkStage", "build_stage3"]
