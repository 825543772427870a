"""Stage 3, P_ldm (`stage3.target=landmarks`, Eq. 7): the landmark predictor, trained on the same clips as the video
model: audio features A^{1:T} (wav2vec2 or, for CPU experiments, log-mel; cached per clip once) and a reference
frame's landmarks -> the landmark sequence, L1 on pose-aligned displacements (AniPortrait). Every
`val_every`-th clip is held out to measure it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from faceedittalker.data.clips import list_clips
from faceedittalker.landmarks.render import render_landmarks
from faceedittalker.metrics.landmarks import landmark_metrics
from faceedittalker.models.landmark_predictor import face_frame, landmark_loss, landmark_targets, predict_landmarks
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.training.checkpoint import write_json_atomic
from faceedittalker.utils.images import image_grid

log = logging.getLogger(__name__)

AUDIO_ENCODER_FILE = "audio_encoder.json"
LANDMARK_METRICS_FILE = "landmark_metrics.json"




class LandmarkStage(Stage):
    name = "stage3-landmarks"

    def _audio_features(self) -> str:
        """Cache the audio features of every clip once (main process first); returns the encoder's name."""
        encoder = instantiate(self.cfg.audio_encoder)
        self.audio_dim = encoder.dim
        self.audio_encoder_config = encoder.describe()  # a kind and settings, never a callable (safe to load)
        root = self.cfg.clip_data.root
        root = instantiate(root) if OmegaConf.is_dict(root) else root  # the synthetic set is made on first use
        with PartialState().main_process_first():
            for clip in tqdm(list_clips(root), desc=f"audio features ({encoder.name})", leave=False):
                encoder.clip_features(clip)
        return encoder.name

    def build_dataset(self) -> Dataset:
        settings = self.cfg.stage3.landmarks
        name = self._audio_features()
        common = dict(num_frames=settings.num_frames, frame_strides=1, encoder_name=name, load_frames=False,
                      load_audio=False, seed=self.cfg.seed, val_every=settings.val_every)  # fmt: skip
        self.val_set = instantiate(self.cfg.clip_data, window_step=settings.num_frames, split="val", **common)
        train = instantiate(self.cfg.clip_data, window_step=settings.window_step, split="train", **common)
        log.info("stage 3 (landmarks): %d training windows of %d frames, %d clips held out", len(train),
                 settings.num_frames, len(self.val_set.clips))  # fmt: skip
        return train

    def build_modules(self) -> StageModules:
        predictor = instantiate(self.cfg.landmark_predictor, _convert_="all", audio_dim=self.audio_dim)
        return StageModules(trainable={"landmark_predictor": predictor})

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        reference = batch["reference_landmarks"]  # (B, 478, 3), image-normalised
        centre, scale = face_frame(reference)
        target = landmark_targets(batch["landmarks"], reference)  # (B, T, 478, 3) in face units
        predicted = modules["landmark_predictor"](batch["audio_features"], (reference - centre) / scale)
        return landmark_loss(predicted, target, self.cfg.stage3.landmarks.mouth_weight)

    def evaluate(self, predictor: nn.Module) -> dict:
        return landmark_metrics(predictor, self.val_set)

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Rows per clip: true landmark images | predicted (reference pose), every other frame."""
        predictor = modules["landmark_predictor"]
        metrics = self.evaluate(predictor)
        if metrics:
            log.info("held-out landmarks: %s", metrics)
        reference = batch["reference_landmarks"]
        predicted = predict_landmarks(predictor, batch["audio_features"], reference).cpu().numpy()
        truth = batch["landmarks"].cpu().numpy()
        size, rows = 96, []
        for clip in range(min(len(truth), 2)):
            for sequence in (truth[clip], predicted[clip]):
                drawn = np.stack([render_landmarks(p, size, 1) for p in sequence[::2]])
                rows.append(torch.from_numpy(drawn).movedim(-1, -3).float() / 127.5 - 1)
        return image_grid(list(torch.stack(rows, dim=1)))

    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        """Which audio encoder the predictor was trained on (its features are its input) and how it does."""
        write_json_atomic(directory / AUDIO_ENCODER_FILE, self.audio_encoder_config)
        metrics = self.evaluate(modules["landmark_predictor"])
        (directory / LANDMARK_METRICS_FILE).write_text(json.dumps(metrics, indent=2))


