"""The contract between the generic trainer and the per-stage code (Alg. 1-3)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset


def configured_autoencoder_path(cfg: DictConfig) -> str | None:
    """`autoencoder.pretrained` of the run config when its E_img is a VAE, else None.

    Stages 2 and 3 load E_img with the stage-1 export; this path, when set, overrides the VAE folder stored there
    (the export may come from another machine, or the VAE folder may have moved)."""
    autoencoder = cfg.get("autoencoder") or {}
    return autoencoder.get("pretrained") if autoencoder.get("kind") == "vae" else None


@dataclass
class StageModules:
    """`trainable` modules are optimised, EMA-averaged, checkpointed and exported with `save_pretrained`;
    `frozen` ones (the VAE, a frozen E_sem, wav2vec2) only move to the device."""

    trainable: dict[str, nn.Module]
    frozen: dict[str, nn.Module] = field(default_factory=dict)


class Stage(ABC):
    """One training stage: what to build, what one step computes, what to show and what to export.

    The trainer calls `build_dataset` before `build_modules`, so a stage may derive module settings from its
    data (stage 2 standardises z_sem with the statistics of its training codes)."""

    name: str = "stage"

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    @abstractmethod
    def build_modules(self) -> StageModules: ...

    @abstractmethod
    def build_dataset(self) -> Dataset: ...

    @abstractmethod
    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        """The loss of one batch; `modules` holds trainable (possibly DDP-wrapped) and frozen modules."""

    def sample_dataset(self, dataset: Dataset) -> Dataset:
        """Where the sample grids' items come from: the training set by default (stage 3 reads frames there even
        when training reads cached latents)."""
        return dataset

    def sample_indices(self, dataset: Dataset, count: int) -> list[int]:
        """The dataset items shown in every sample grid (fixed for the run): the first `count` by default."""
        return list(range(min(count, len(dataset))))

    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray | None:
        """A uint8 (H, W, 3) picture of what the model does now (EMA weights), or None."""
        return None

    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        """Write what inference needs besides the trainable modules' `save_pretrained` folders."""
        return None
