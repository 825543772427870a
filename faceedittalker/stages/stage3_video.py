"""Stage 3, Alg. 3 (`stage3.target=video`): the audio-driven video generation module, trained on talking clips.

eps_theta inflated from the stage-1 model (`stage3.feature_space`) with zero-initialised temporal layers and
landmark-feature input channels, and a new E_ldm; E_img and E_sem frozen. Loss (Eq. 13):
|| eps_theta(Z_t, t | z_sem = E_sem(x_ref), F = E_ldm(L, l_ref)) - eps ||^2 over the latents of a window of
frames, with ground-truth landmarks L from the dataset and a reference frame of the same clip; optionally with
the mouth box weighted up (`stage3.video.mouth_loss_weight`, beyond the paper).

Reading of Alg. 3: its lines 6-7 noise E_img(x_ref); we noise the latents of the clip's frames (what Eq. 13's
eps-MSE needs to learn motion), and the reference enters through z_sem. At inference Z_T is the reference's
DDIM-inverted latent, shared by all frames (Alg. 4, `TalkingHeadModel`).
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

from faceedittalker.data.clip_latents import encode_frames, latent_cache_key, write_clip_latents
from faceedittalker.errors import InputError
from faceedittalker.metrics.image import lip_box_mask, mouth_psnr, psnr
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.models.talking_head import TalkingHeadModel
from faceedittalker.models.unet import ConditionalUNet
from faceedittalker.stages.base import Stage, StageModules, configured_autoencoder_path
from faceedittalker.utils.files import write_json_atomic
from faceedittalker.utils.images import image_grid

log = logging.getLogger(__name__)


class VideoStage(Stage):
    name = "stage3"

    def build_dataset(self) -> Dataset:
        if not self.cfg.stage3.feature_space:
            raise InputError("stage 3 needs a trained stage-1 model: set stage3.feature_space=RUN/export")
        if (mouth_weight := self.cfg.stage3.video.mouth_loss_weight) < 0:
            raise InputError(f"stage3.video.mouth_loss_weight must be >= 0, got {mouth_weight}")
        self.set_feature_space(ImageFeatureSpace.from_pretrained(
            self.cfg.stage3.feature_space, autoencoder_path=configured_autoencoder_path(self.cfg)))
        video = self.cfg.stage3.video
        settings = dict(num_frames=video.num_frames, frame_strides=list(video.frame_strides),
                        window_step=video.window_step, resolution=self.space.resolution,
                        landmark_image_size=self.landmark_image_size, load_audio=False, seed=self.cfg.seed)  # fmt: skip
        dataset = self.frames_dataset = instantiate(self.cfg.clip_data, **settings)
        if video.latent_cache:
            dataset = instantiate(self.cfg.clip_data, **settings, latent_key=self._cache_latents(dataset))
        log.info("stage 3 (video): %d windows of %d frames from %d clips%s", len(dataset), video.num_frames,
                 len(dataset.clips), " (cached latents)" if video.latent_cache else "")  # fmt: skip
        return dataset

    @property
    def encode_dtype(self) -> torch.dtype | None:
        """bf16 mixed precision runs the frozen encoders under bf16 autocast too (Accelerate autocasts only the
        prepared, trainable modules); with fp16 they stay fp32, the SD-VAE's activations overflow float16."""
        return torch.bfloat16 if self.cfg.trainer.mixed_precision == "bf16" else None

    def set_feature_space(self, space: ImageFeatureSpace) -> None:
        """The stage-1 model stage 3 starts from (`build_dataset` loads it; `scripts/model_summary.py` may pass a
        random one)."""
        self.space = space
        self.landmark_image_size = self.cfg.stage3.video.landmark_image_size or space.resolution

    def _cache_latents(self, dataset: Dataset) -> str:
        """Write the missing per-clip caches of Z0 and z_sem (main process first); returns their key."""
        space = self.space
        key = latent_cache_key(space.autoencoder, space.semantic_encoder, space.resolution)
        state = PartialState()
        with state.main_process_first():
            if state.is_main_process:
                written = write_clip_latents(
                    dataset.clips, [int(m["num_frames"]) for m in dataset.meta], space.autoencoder.to(state.device),
                    space.semantic_encoder.to(state.device).eval(), space.resolution, key,
                    self.cfg.stage3.video.encode_batch_size, state.device, self.encode_dtype,
                )  # fmt: skip
                log.info("latent cache %s: %d of %d clips encoded now", key, written, len(dataset.clips))
        return key

    def sample_dataset(self, dataset: Dataset) -> Dataset:
        """The sample grids compare with the true frames: read them even when training reads cached latents."""
        return self.frames_dataset

    def encode(self, batch: dict, modules: dict[str, nn.Module]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z0 (B, F, C, h, w), z_sem (B, Z)) of a batch, float32: cached, or from the frozen E_img (in chunks of
        `encode_batch_size` frames) and E_sem, in the training precision."""
        if "latents" in batch:
            return batch["latents"].float(), batch["reference_z_sem"].float()
        frames = batch["frames"]  # (B, F, 3, R, R) in [-1, 1]
        with torch.no_grad():
            z0 = encode_frames(modules["autoencoder"], frames.flatten(0, 1), self.cfg.stage3.video.encode_batch_size,
                               self.encode_dtype).unflatten(0, frames.shape[:2])  # fmt: skip
            with torch.autocast(frames.device.type, dtype=self.encode_dtype, enabled=self.encode_dtype is not None):
                z_sem = modules["semantic_encoder"](batch["reference"]).float()  # (B, Z)
        return z0, z_sem

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
        z0, z_sem = self.encode(batch, modules)
        features = modules["landmark_encoder"](batch["landmark_images"], batch["reference_landmark_image"])
        unet = modules["unet"]
        return self.diffusion.training_loss(  # Eq. 13
            lambda z_t, t: unet(z_t, t, z_sem, features.cond, features.residuals or None), z0,
            pixel_weights=self.mouth_weights(batch, z0.shape[-1]),
        )

    def mouth_weights(self, batch: dict, size: int) -> torch.Tensor | None:
        """(B, F, 1, size, size) loss weights from the batch's true landmarks (B, F, 478, 3):
        `stage3.video.mouth_loss_weight` inside each frame's mouth box, 1 elsewhere (None at 1, Eq. 13 as
        written). The mouth is a few percent of a frame and the rest is already given by the reference, so an
        unweighted loss hardly asks the frames to follow L's lips (Hallo and EchoMimic weight the lip region in
        the same way)."""
        weight = float(self.cfg.stage3.video.mouth_loss_weight)
        if weight == 1.0:
            return None
        mask = lip_box_mask(batch["landmarks"], size).unsqueeze(2)  # (B, F, 1, size, size)
        return 1.0 + (weight - 1.0) * mask.float()

    def talking_head(self, modules: dict[str, nn.Module]) -> TalkingHeadModel:
        sampling, video = self.cfg.sampling, self.cfg.stage3.video
        return TalkingHeadModel(
            modules["autoencoder"], modules["semantic_encoder"], modules["unet"], modules["landmark_encoder"],
            self.diffusion, self.space.resolution, self.landmark_image_size, num_frames=video.num_frames,
            window_overlap=video.window_overlap, sample_steps=sampling.sample_steps,
            invert_steps=sampling.invert_steps,
        )  # fmt: skip

    def sample_indices(self, dataset: Dataset, count: int) -> list[int]:
        """One window from each of up to `min(count, 2)` different clips, spread over the clip list (the first
        windows of the dataset all belong to clip 0): the logged PSNRs then compare two clips, not one twice."""
        first_window: dict[int, int] = {}
        for item, (clip, _, _) in enumerate(dataset.index):
            first_window.setdefault(clip, item)
        clips = sorted(first_window)
        picks = np.linspace(0, len(clips) - 1, min(count, 2, len(clips))).round().astype(int)
        return [first_window[clips[i]] for i in picks]

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
        config = directory / "semantic_encoder" / "config.json"  # loaded from stage 1's export: diffusers records
        settings = json.loads(config.read_text())  # that folder as `_name_or_path`, a path of this machine only
        if settings.pop("_name_or_path", None) is not None:
            write_json_atomic(config, settings)
        self.talking_head(modules).save_config(directory)


