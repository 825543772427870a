"""Fig. 2(b), the audio-driven video generation module, given the landmark sequence: reference -> (z_sem, Z_T),
landmark images -> F (E_ldm), then conditional DDIM over all frames (Eq. 9-10) and the image decoder.

    z_sem = E_sem(x_ref)                                          semantic code (edited by the caller if asked)
    Z_T   = DDIM-invert(E_img(x_ref) | z_sem, F(l_ref))           the reference's stochastic code, one frame
    V     = Dec(DDIM(Z_T repeated over T frames | z_sem, F^{1:T})) one video

Long videos are denoised in overlapping windows of `num_frames` frames whose noise predictions are averaged per
frame at every step (AniPortrait's scheme), so memory does not grow with the length and there are no seams.
`TalkingHeadModel.from_pretrained(stage-3 export)` rebuilds everything from what stage 3 exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from faceedittalker.diffusion import DDIM
from faceedittalker.diffusion.ddim import Denoiser
from faceedittalker.models.feature_space import build_exported_autoencoder, read_export_config
from faceedittalker.models.landmark_encoder import LandmarkEncoder, LandmarkFeatures
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.unet import ConditionalUNet

CONFIG_FILE = "talking_head.json"


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of the overlapping windows that cover `num_frames` frames; the last one ends on the last
    frame, so every frame is covered and no window is short."""
    if num_frames <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    starts = list(range(0, num_frames - window, window - overlap))
    return [*starts, num_frames - window]


class TalkingHeadModel(nn.Module):
    """E_img + E_sem + video eps_theta + E_ldm + DDIM: one reference and landmark images in, frames out."""

    def __init__(
        self,
        autoencoder: nn.Module,
        semantic_encoder: SemanticEncoder,
        unet: ConditionalUNet,
        landmark_encoder: LandmarkEncoder,
        ddim: DDIM,
        resolution: int,
        landmark_image_size: int,
        num_frames: int = 16,
        window_overlap: int = 4,
        sample_steps: int = 20,
        invert_steps: int = 20,
    ):
        super().__init__()
        self.autoencoder = autoencoder
        self.semantic_encoder = semantic_encoder
        self.unet = unet
        self.landmark_encoder = landmark_encoder
        self.ddim = ddim
        self.resolution = resolution
        self.landmark_image_size = landmark_image_size
        self.num_frames = num_frames
        self.window_overlap = window_overlap
        self.sample_steps = sample_steps
        self.invert_steps = invert_steps

    # ----- conditions ------------------------------------------------------------------------------------
    def landmark_features(self, landmark_images: torch.Tensor, reference_image: torch.Tensor) -> LandmarkFeatures:
        """E_ldm: (B, T, 3, S, S) and (B, 3, S, S) -> F^{1:T} (computed once per video, not per step)."""
        return self.landmark_encoder(landmark_images, reference_image)

    def denoiser(self, z_sem: torch.Tensor, features: LandmarkFeatures) -> Denoiser:
        """eps_theta(Z_t, t | z_sem, F^{1:T}) over any number of frames, window by window."""
        window, overlap = self.num_frames, self.window_overlap

        def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            total = z_t.shape[1]  # z_t (B, T, C, h, w)
            out = torch.zeros_like(z_t)
            count = torch.zeros(total, device=z_t.device, dtype=z_t.dtype)
            for start in window_starts(total, window, overlap):
                part = slice(start, min(start + window, total))
                chunk = features.select(part)
                out[:, part] += self.unet(z_t[:, part], t, z_sem, chunk.cond, chunk.residuals or None)
                count[part] += 1
            return out / count[None, :, None, None, None]

        return eps

    # ----- the reference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(
        self, image: torch.Tensor, reference_landmark_image: torch.Tensor, z_sem: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_ref (B, 3, R, R) in [-1, 1] and its own landmark image -> (z_sem (B, Z), Z_T (B, 1, C, h, w)).

        Z_T is the DDIM inversion of a still video: `num_frames` copies of the reference driven by its own
        landmarks, averaged over the frames (they differ only through the frame positions). Inverting a
        one-frame video instead puts the temporal layers outside what they were trained on: on the tiny model
        that round trip lost 4 dB (21.5 vs 25.6 dB). `z_sem` may be given; invert with the unedited code, as
        DiffAE does before editing."""
        z_sem = self.semantic_encoder(image) if z_sem is None else z_sem
        frames = self.num_frames
        z0 = self.autoencoder.encode(image)[:, None].expand(-1, frames, -1, -1, -1)  # (B, F, C, h, w)
        still = reference_landmark_image[:, None].expand(-1, frames, -1, -1, -1)
        features = self.landmark_features(still, reference_landmark_image)
        z_T = self.ddim.invert(self.denoiser(z_sem, features), z0, self.invert_steps)
        return z_sem, z_T.mean(dim=1, keepdim=True)

    # ----- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        z_T: torch.Tensor,
        z_sem: torch.Tensor,
        landmark_images: torch.Tensor,
        reference_landmark_image: torch.Tensor,
        steps: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Z_T (B, 1 or T, C, h, w), z_sem (B, Z) (edited or not), landmark images (B, T, 3, S, S) ->
        frames (B, T, 3, R, R) in [-1, 1]."""
        batch, num_frames = landmark_images.shape[:2]
        features = self.landmark_features(landmark_images, reference_landmark_image)
        z_T = z_T.expand(batch, num_frames, *z_T.shape[2:]).contiguous()  # the reference's Z_T for every frame
        z0 = self.ddim.sample(self.denoiser(z_sem, features), z_T, steps or self.sample_steps, progress=progress)
        return self.autoencoder.decode(z0.flatten(0, 1)).unflatten(0, (batch, num_frames))

    # ----- persistence -----------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "resolution": self.resolution,
            "landmark_image_size": self.landmark_image_size,
            "num_frames": self.num_frames,
            "window_overlap": self.window_overlap,
            "autoencoder": self.autoencoder.describe(),
            "diffusion": self.ddim.config_dict(),
            "sample_steps": self.sample_steps,
            "invert_steps": self.invert_steps,
        }

    def save_config(self, directory: str | Path) -> None:
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2))

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, autoencoder_path: str | None = None, device: str | torch.device = "cpu"
    ) -> TalkingHeadModel:
        """Load a stage-3 export folder (`unet/`, `landmark_encoder/`, `semantic_encoder/`, talking_head.json)."""
        directory, config = read_export_config(directory, CONFIG_FILE, "stage-3 video model")
        autoencoder = build_exported_autoencoder(config, autoencoder_path)
        model = cls(
            autoencoder=autoencoder,
            semantic_encoder=SemanticEncoder.from_pretrained(directory / "semantic_encoder"),
            unet=ConditionalUNet.from_pretrained(directory / "unet"),
            landmark_encoder=LandmarkEncoder.from_pretrained(directory / "landmark_encoder"),
            ddim=DDIM(**config["diffusion"]),
            **{k: v for k, v in config.items() if k not in ("autoencoder", "diffusion")},
        )
        return model.to(device).eval()
