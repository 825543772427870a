"""Stage 3, Alg. 3: the audio-driven video generation module, trained on talking clips (DESIGN §2).

`stage3.target=video` (Alg. 3): eps_theta inflated from the stage-1 model (`stage3.feature_space`) with
zero-initialised temporal layers and landmark-feature input channels, and a new E_ldm; E_img and E_sem frozen.
Loss (Eq. 13): || eps_theta(Z_t, t | z_sem = E_sem(x_ref), F = E_ldm(L, l_ref)) - eps ||^2 over the latents
of a window of frames, with ground-truth landmarks L from the dataset and a reference frame of the same clip.

Reading of Alg. 3: its lines 6-7 noise E_img(x_ref); we noise the latents of the clip's frames (what Eq. 13's
eps-MSE needs to learn motion), and the reference enters through z_sem. At inference Z_T is the reference's
DDIM-inverted latent, shared by all frames (Alg. 4, `TalkingHeadModel`).

`stage3.target=landmarks`: P_ldm (Eq. 7) on the same clips: audio features A^{1:T} (wav2vec2 or, for CPU
experiments, log-mel; cached per clip once) and a reference frame's landmarks -> the landmark sequence, L1 on
pose-aligned displacements (AniPortrait). Every `val_every`-th clip is held out to measure it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from faceedittalker.data.clips import list_clips
from faceedittalker.data.landmarks import CONNECTIONS, render_landmarks
from faceedittalker.errors import InputError
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.models.landmark_predictor import (
    face_frame,
    landmark_loss,
    landmark_targets,
    predict_landmarks,
)
from faceedittalker.models.talking_head import TalkingHeadModel
from faceedittalker.models.unet import ConditionalUNet
from faceedittalker.stages.base import Stage, StageModules
from faceedittalker.utils.images import image_grid, psnr

log = logging.getLogger(__name__)

AUDIO_ENCODER_FILE = "audio_encoder.json"
LANDMARK_METRICS_FILE = "landmark_metrics.json"
LIP_POINTS = sorted({point for pair in CONNECTIONS["lips"] for point in pair})


def build_stage3(cfg: DictConfig) -> Stage:
    """`stage=3`: the video model or the landmark predictor, as `stage3.target` says."""
    targets = {"video": VideoStage, "landmarks": LandmarkStage}
    if cfg.stage3.target not in targets:
        raise InputError(f"stage3.target={cfg.stage3.target} is not one of {sorted(targets)}")
    return targets[cfg.stage3.target](cfg)


# ---------------------------------------------------------------------------------------------------------
# eps_theta + E_ldm (Alg. 3)
# ---------------------------------------------------------------------------------------------------------


class VideoStage(Stage):
    name = "stage3"

    def build_dataset(self) -> Dataset:
        if not self.cfg.stage3.feature_space:
            raise InputError("stage 3 needs a trained stage-1 model: set stage3.feature_space=RUN/export")
        self.space = ImageFeatureSpace.from_pretrained(self.cfg.stage3.feature_space)
        video = self.cfg.stage3.video
        self.landmark_image_size = video.landmark_image_size or self.space.resolution
        dataset = instantiate(
            self.cfg.clip_data,
            num_frames=video.num_frames,
            frame_strides=list(video.frame_strides),
            window_step=video.window_step,
            resolution=self.space.resolution,
            landmark_image_size=self.landmark_image_size,
            load_audio=False,
            seed=self.cfg.seed,
        )
        log.info("stage 3 (video): %d windows of %d frames from %d clips", len(dataset), video.num_frames,
                 len(dataset.clips))  # fmt: skip
        return dataset

    def build_modules(self) -> StageModules:
        """Must follow `build_dataset` (it loads the stage-1 model)."""
        cfg, space = self.cfg, self.space
        encoder_cfg = OmegaConf.to_container(cfg.landmark_encoder, resolve=True)
        multiscale = encoder_cfg.pop("multiscale")
        unet = ConditionalUNet.inflate(
            space.unet, cond_channels=encoder_cfg["cond_channels"], temporal_layers=True,
            **OmegaConf.to_container(cfg.stage3.video.temporal, resolve=True),
        )  # fmt: skip
        landmark_encoder = instantiate(
            encoder_cfg, _convert_="all", image_size=self.landmark_image_size,
            latent_size=space.resolution // space.autoencoder.downsample_factor,
            residual_channels=unet.residual_channels if multiscale else [],
        )  # fmt: skip
        if not cfg.stage3.video.train_spatial:  # AniPortrait's motion-only stage: spatial layers stay as stage 1
            for name, parameter in unet.named_parameters():
                parameter.requires_grad_(".temporal." in name or name.startswith("conv_in"))
        space.semantic_encoder.requires_grad_(False)
        self.diffusion = space.ddim
        return StageModules(
            trainable={"unet": unet, "landmark_encoder": landmark_encoder},
            frozen={"autoencoder": space.autoencoder, "semantic_encoder": space.semantic_encoder},
        )

    def training_step(self, batch: dict, modules: dict[str, nn.Module]) -> torch.Tensor:
        frames = batch["frames"]  # (B, F, 3, R, R) in [-1, 1]
        batch_size, num_frames = frames.shape[:2]
        with torch.no_grad():
            z0 = modules["autoencoder"].encode(frames.flatten(0, 1)).unflatten(0, (batch_size, num_frames))
            z_sem = modules["semantic_encoder"](batch["reference"])  # (B, Z)
        features = modules["landmark_encoder"](batch["landmark_images"], batch["reference_landmark_image"])
        unet = modules["unet"]
        return self.diffusion.training_loss(  # Eq. 13
            lambda z_t, t: unet(z_t, t, z_sem, features.cond, features.residuals or None), z0
        )

    def talking_head(self, modules: dict[str, nn.Module]) -> TalkingHeadModel:
        sampling, video = self.cfg.sampling, self.cfg.stage3.video
        return TalkingHeadModel(
            modules["autoencoder"], modules["semantic_encoder"], modules["unet"], modules["landmark_encoder"],
            self.diffusion, self.space.resolution, self.landmark_image_size, num_frames=video.num_frames,
            window_overlap=video.window_overlap, sample_steps=sampling.sample_steps,
            invert_steps=sampling.invert_steps,
        )  # fmt: skip

    @torch.no_grad()
    def sample(self, batch: dict, modules: dict[str, nn.Module]) -> np.ndarray:
        """Per clip (at most 2), three rows over its frames: ground truth | landmark images L | generated from
        the reference's inverted Z_T, z_sem and L. Logs how close the frames are to the truth, whole and in the
        mouth region, against the same generation driven by the reference's landmarks on every frame: the
        mouth gap between the two is what the model takes from L."""
        model = self.talking_head(modules)
        batch = {k: v[:2] for k, v in batch.items()}
        frames = batch["frames"]  # (B, F, 3, R, R)
        z_sem, z_T = model.encode_reference(batch["reference"], batch["reference_landmark_image"])
        generated = model.generate(z_T, z_sem, batch["landmark_images"], batch["reference_landmark_image"])
        frozen = batch["reference_landmark_image"][:, None].expand_as(batch["landmark_images"])
        still = model.generate(z_T, z_sem, frozen, batch["reference_landmark_image"])
        scores = {name: (psnr(video.flatten(0, 1), frames.flatten(0, 1)).mean().item(),
                         mouth_psnr(video, frames, batch["landmarks"]))
                  for name, video in (("driven by L", generated), ("reference landmarks", still))}  # fmt: skip
        log.info("stage 3 sample, PSNR vs the true frames (whole / mouth): %s",
                 ", ".join(f"{k} {a:.2f} / {b:.2f} dB" for k, (a, b) in scores.items()))  # fmt: skip
        landmarks = nn.functional.interpolate(batch["landmark_images"].flatten(0, 1) * 2 - 1, size=frames.shape[-2:],
                                              mode="area").unflatten(0, frames.shape[:2])  # fmt: skip
        rows = []
        for clip in range(len(frames)):
            rows += [frames[clip], landmarks[clip], generated[clip]]
        return image_grid(list(torch.stack(rows, dim=1)))  # columns = frames

    def export(self, directory: Path, modules: dict[str, nn.Module]) -> None:
        """The stage-3 export is self-contained: the frozen E_sem is saved beside the trained modules."""
        modules["semantic_encoder"].save_pretrained(directory / "semantic_encoder")
        self.talking_head(modules).save_config(directory)


# ---------------------------------------------------------------------------------------------------------
# P_ldm (Eq. 7)
# ---------------------------------------------------------------------------------------------------------


class LandmarkStage(Stage):
    name = "stage3-landmarks"

    def _audio_features(self) -> str:
        """Cache the audio features of every clip once (main process first); returns the encoder's name."""
        encoder = instantiate(self.cfg.audio_encoder)
        self.audio_dim = encoder.dim
        self.audio_encoder_config = OmegaConf.to_container(self.cfg.audio_encoder, resolve=True)
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
        (directory / AUDIO_ENCODER_FILE).write_text(json.dumps(self.audio_encoder_config, indent=2))
        metrics = self.evaluate(modules["landmark_predictor"])
        (directory / LANDMARK_METRICS_FILE).write_text(json.dumps(metrics, indent=2))


@torch.no_grad()
def landmark_metrics(predictor: nn.Module, clips: Dataset, batch_size: int = 8) -> dict:
    """P_ldm on windows with audio features (`ClipWindowDataset(..., encoder_name=...)`): the mean distance of
    the lip landmarks (M-LMD-style, in pixels of a 512 px frame, head motion removed as the model removes it)
    and the Pearson r of predicted vs true inner-lip opening over all frames."""
    if not len(clips):
        return {}
    device = next(predictor.parameters()).device
    distances, predicted_opening, true_opening = [], [], []
    for batch in DataLoader(clips, batch_size=batch_size):
        reference = batch["reference_landmarks"].to(device)
        truth = landmark_targets(batch["landmarks"].to(device), reference) * face_frame(reference)[1][:, None]
        truth = truth + reference[:, None]  # pose-aligned true landmarks, image-normalised
        predicted = predict_landmarks(predictor, batch["audio_features"].to(device), reference)
        lips = (predicted[..., LIP_POINTS, :2] - truth[..., LIP_POINTS, :2]).norm(dim=-1)  # (B, T, K)
        distances.append(lips.mean(-1).flatten() * 512)
        predicted_opening.append(mouth_opening(predicted).flatten())
        true_opening.append(mouth_opening(truth).flatten())
    predicted_opening, true_opening = torch.cat(predicted_opening), torch.cat(true_opening)
    r = torch.corrcoef(torch.stack([predicted_opening, true_opening]))[0, 1].item()
    return {"windows": len(clips), "frames": len(true_opening),
            "mouth_lmd_px512": round(torch.cat(distances).mean().item(), 3),
            "mouth_opening_pearson_r": round(r, 4)}  # fmt: skip


def mouth_psnr(video: torch.Tensor, truth: torch.Tensor, landmarks: torch.Tensor, margin: float = 0.25) -> float:
    """PSNR (dB) of `video` vs `truth` (B, F, 3, R, R) in each frame's mouth box: the lip landmarks' bounding box
    (landmarks (B, F, 478, 3), image-normalised), widened by `margin` of its size on every side."""
    size = truth.shape[-1]
    lips = landmarks[..., LIP_POINTS, :2]  # (B, F, K, 2)
    low, high = lips.amin(dim=2), lips.amax(dim=2)  # (B, F, 2)
    pad = (high - low) * margin
    low = ((low - pad) * size).floor().clamp(0, size - 1).long()
    high = ((high + pad) * size).ceil().clamp(1, size).long()
    errors = []
    for b in range(truth.shape[0]):
        for f in range(truth.shape[1]):
            (x0, y0), (x1, y1) = low[b, f].tolist(), high[b, f].tolist()
            box = (slice(None), slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1)))
            errors.append(psnr(video[b, f][box][None], truth[b, f][box][None]))
    return torch.cat(errors).mean().item()


def mouth_opening(landmarks: torch.Tensor) -> torch.Tensor:
    """Inner-lip opening (points 13 and 14), as the synthetic set measures it."""
    return (landmarks[..., 14, :2] - landmarks[..., 13, :2]).norm(dim=-1)
