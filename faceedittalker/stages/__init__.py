"""Training stages (Alg. 1-3), selected by the plain config key `stage`."""

from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.stages.stage1 import Stage1
from faceedittalker.stages.stage2 import Stage2

STAGES: dict[int, type[Stage]] = {1: Stage1, 2: Stage2}

__all__ = ["STAGES", "Stage", "StageModules", "Stage1", "Stage2"]
