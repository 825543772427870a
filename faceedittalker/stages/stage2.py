"""Stage 2, Alg. 2: the linear attribute classifier C on the frozen semantic encoder.

The z_sem of every labelled image is computed once with the frozen E_sem of a stage-1 export
(`stage2.feature_space`); C is then trained on the codes with sigmoid / BCE (Eq. 12) and exported as the
attribute library (`AttributeClassifier`: names, directions, z statistics). A held-out split gives the
per-attribute accuracy written beside the export; sample grids decode edited codes with the stage-1 model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from hydra.utils import instantiate
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from faceedittalker.errors import InputError
from faceedittalker.metrics.semantics import balanced_accuracy
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.stages.base import Stage, StageModules, configured_autoencoder_path
from faceedittalker.utils.images import image_grid

log = logging.getLogger(__name__)


class CodeDataset(Dataset):
    """Precomputed semantic codes and their labels."""

    def __init__(self, z_sem: torch.Tensor, labels: torch.Tensor):
        self.z_sem, self.labels = z_sem, labels

    def __len__(self) -> int:
        return len(self.z_sem)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"z_sem": self.z_sem[index], "labels": self.labels[index]}


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """(N, A) 0/1 labels -> (A,) BCE weights of the positives, negatives / positives per attribute, so that both
    classes weigh alike (1 where an attribute has no positives: nothing to weigh)."""
    positives = labels.float().sum(0)
    return torch.where(positives > 0, (len(labels) - positives) / positives.clamp_min(1), torch.ones_like(positives))


class Stage2(Stage):
    name = "stage2"
    pos_weight: torch.Tensor | None = None  # set by build_dataset when stage2.class_balanced

    def _load_feature_space(self) -> ImageFeatureSpace:
        if not self.cfg.stage2.feature_space:
            raise InputError("stage 2 needs a trained stage-1 model: set stage2.feature_space=RUN/export")
        return ImageFeatureSpace.from_pretrained(self.cfg.stage2.feature_space,
                                                 autoencoder_path=configured_autoencoder_path(self.cfg))

    @torch.no_grad()
    def build_dataset(self) -> Dataset:
        self.space = self._load_feature_space()
        images = instantiate(self.cfg.attribute_data, resolution=self.space.resolution)
        self.names = images.names
        device = PartialState().device
        encoder = self.space.semantic_encoder.to(device)
        codes, labels = [], []
        loader = DataLoader(images, batch_size=self.cfg.stage2.encode_batch_size, num_workers=0)
        for batch in tqdm(loader, desc="z_sem of the labelled images", leave=False):
            codes.append(encoder(batch["image"].to(device)).cpu())
            labels.append(batch["labels"])
        z_sem, labels = torch.cat(codes), torch.cat(labels)
        # Hold out every k-th *image* (both of its mirror copies) to measure accuracy on unseen faces.
        image_index = torch.arange(len(z_sem)) % len(images.files)
        every = max(int(round(1 / self.cfg.stage2.val_fraction)), 2) if self.cfg.stage2.val_fraction else 0
        held_out = (image_index % every == 0) if every else torch.zeros(len(z_sem), dtype=torch.bool)
        self.val_codes, self.val_labels = z_sem[held_out], labels[held_out]
        previews = range(min(self.cfg.stage2.num_preview_images, len(images.files)))
        self.preview_images = torch.stack([images[i]["image"] for i in previews])
        self.train_codes = z_sem[~held_out]
        train = CodeDataset(self.train_codes, labels[~held_out])
        # Eq. 12 weighs every label alike; with rare attributes (glasses on ~15 % of faces) that mostly learns the
        # prior. `class_balanced` weighs each attribute's positives by its negatives / positives instead.
        self.pos_weight = positive_weights(labels[~held_out]) if self.cfg.stage2.get("class_balanced") else None
        log.info("stage 2: %d training codes, %d held out, %d attributes", len(train), len(self.val_codes),
                 len(self.names))
        return train

    def build_modules(self) -> StageModules:
        """Must follow `build_dataset` (the codes fix the classifier's standardisation)."""
        classifier = instantiate(self.cfg.classifier, _convert_="all", names=list(self.names),
                                 z_dim=self.train_codes.shape[1])
        classifier.set_statistics(self.train_codes)
        self._check_edit_preview(classifier)
        return StageModules(trainable={"attribute_classifier": classifier}, frozen={"feature_space": self.space})

    def _check_edit_preview(self, classifier: nn.Module) -> None:
        """The sample grids' edits, tried at build time on every rank: a bad name found at the first sample would
        stop rank 0 alone and leave the other ranks waiting for it."""
        try:
            classifier.edit(torch.zeros(1, classifier.config.z_dim), dict(self.cfg.stage2.edit_preview))
        except (ValueError, TypeError) as err:  # InputError is a ValueError; float("abc") too
            raise InputError(f"stage2.edit_preview: {err}") from err

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        logits = modules["attribute_classifier"](batch["z_sem"])  # (B, 40)
        weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"].float(), pos_weight=weight)  # Eq. 12

    @torch.no_grad()
    def accuracy(self, classifier: nn.Module) -> dict[str, float | None]:
        """Balanced accuracy (mean of the true-positive and true-negative rates; chance = 0.5) per attribute on
        the held-out codes; None for attributes with a single class there (e.g. never present)."""
        if not len(self.val_codes):
            return {}
        device = next(classifier.parameters()).device
        predicted = classifier(self.val_codes.to(device)).cpu() > 0
        return balanced_accuracy(predicted, self.val_labels > 0.5, self.names)

    @staticmethod
    def mean_accuracy(accuracy: dict[str, float | None]) -> float | None:
        values = [v for v in accuracy.values() if v is not None]
        return round(float(np.mean(values)), 4) if values else None

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows: input | reconstruction | one column per `stage2.edit_preview` edit (same Z_T, edited z_sem)."""
        classifier, space = modules["attribute_classifier"], modules["feature_space"]
        mean = self.mean_accuracy(self.accuracy(classifier))
        if mean is not None:
            log.info("held-out balanced accuracy over the attributes present: %.3f", mean)
        images = self.preview_images.to(next(space.parameters()).device)
        z_sem = space.encode_semantic(images)
        z_T = space.encode_stochastic(images, z_sem)
        columns = [images, space.decode(z_T, z_sem)]
        for name, alpha in self.cfg.stage2.edit_preview.items():
            columns.append(space.decode(z_T, classifier.edit(z_sem, {name: alpha})))
        return image_grid(columns)

    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        accuracy = self.accuracy(modules["attribute_classifier"])
        summary = {"metric": "balanced accuracy on held-out images (chance 0.5); null = one class only",
                   "mean": self.mean_accuracy(accuracy), "per_attribute": accuracy}
        (directory / "attribute_accuracy.json").write_text(json.dumps(summary, indent=2))
