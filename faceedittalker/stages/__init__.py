"""Training stages (Alg. 1-3), one file each, selected by the plain config key `stage` (and, for stage 3, by
`stage3.target`: `video` for eps_theta + E_ldm, `landmarks` for P_ldm). Stage 0, beyond the paper, trains the image
decoder side: a small autoencoder for E_img where no pretrained VAE fits the data (`stage0.target=autoencoder`, the
synthetic world at 128 px), or the x4 face upsampler of a pixel-space model's frames (`stage0.target=upsampler`)."""

from collections.abc import Callable

from omegaconf import DictConfig

from faceedittalker.errors import InputError
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.stages.stage0_autoencoder import AutoencoderStage
from faceedittalker.stages.stage0_upsampler import UpsamplerStage
from faceedittalker.stages.stage1 import Stage1
from faceedittalker.stages.stage2 import Stage2
from faceedittalker.stages.stage3_landmarks import LandmarkStage
from faceedittalker.stages.stage3_video import VideoStage


def build_stage0(cfg: DictConfig) -> Stage:
    """`stage=0`: the VAE or the face upsampler, as `stage0.target` says."""
    targets = {"autoencoder": AutoencoderStage, "upsampler": UpsamplerStage}
    target = cfg.stage0.get("target", "autoencoder")
    if target not in targets:
        raise InputError(f"stage0.target={target} is not one of {sorted(targets)}")
    return targets[target](cfg)


def build_stage3(cfg: DictConfig) -> Stage:
    """`stage=3`: the video model or the landmark predictor, as `stage3.target` says."""
    targets = {"video": VideoStage, "landmarks": LandmarkStage}
    if cfg.stage3.target not in targets:
        raise InputError(f"stage3.target={cfg.stage3.target} is not one of {sorted(targets)}")
    return targets[cfg.stage3.target](cfg)


STAGES: dict[int, Callable[[DictConfig], Stage]] = {0: build_stage0, 1: Stage1, 2: Stage2, 3: build_stage3}

__all__ = ["STAGES", "Stage", "StageModules", "AutoencoderStage", "UpsamplerStage", "Stage1", "Stage2", "VideoStage",
           "LandmarkStage", "build_stage0", "build_stage3"]
