"""Fig. 2(b), the audio-driven video generation module, given the landmark sequence: reference -> (z_sem, Z_T),
landmark images -> F (E_ldm), then conditional DDIM over all frames (Eq. 9-10) and the image decoder.

    z_sem = E_sem(x_ref)                                          semantic code (edited by the caller if asked)
    Z_T   = DDIM-invert(E_img(x_ref) | z_sem, F(l_ref))           the reference's stochastic code, one frame
    V     = Dec(DDIM(Z_T repeated over T frames | z_sem, F^{1:T})) one video

Long videos are denoised in overlapping windows of `num_frames` frames whose noise predictions are averaged per
frame at every step (AniPortrait's scheme), with E_ldm run on each window as it is denoised, so memory does not
grow with the length (beyond the small latents) and there are no seams.
`TalkingHeadModel.from_pretrained(stage-3 export)` rebuilds everything from what stage 3 exported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from faceedittalker.diffusion import DDIM
from faceedittalker.diffusion.ddim import Denoiser
from faceedittalker.errors import InputError
from faceedittalker.models.feature_space import build_exported_autoencoder
from faceedittalker.models.landmark_encoder import LandmarkEncoder, LandmarkFeatures
from faceedittalker.models.pretrained import PretrainedFolder
from faceedittalker.models.semantic_encoder import SemanticEncoder
from faceedittalker.models.unet import ConditionalUNet

CONFIG_FILE = "talking_head.json"

# The landmark images of some frames: index (all videos, a slice of frames) -> (B, W, 3, S, S) in [0, 1].
FrameSource = Callable[[tuple[slice, slice]], torch.Tensor]


def window_starts(num_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of the overlapping windows that cover `num_frames` frames; the last one ends on the last
    frame, so every frame is covered and no window is short."""
    if num_frames <= window:
        return [0]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    starts = list(range(0, num_frames - window, window - overlap))
    return [*starts, num_frames - window]


def edit_guided(edited: Denoiser, unedited: Denoiser, scale: float, mask: torch.Tensor | None = None,
                interval: tuple[float, float] | None = None) -> Denoiser:
    """Edit guidance and edit regions (beyond the paper; classifier-free guidance's form applied to an edit of
    z_sem, and blended diffusion's mask):
        eps = eps(z_sem) + m * (1 + s) * (eps(z_sem') - eps(z_sem))
    s = 0 and m = 1 is Eq. 3 alone. Moving z_sem further along w (a larger alpha) also moves it along whatever else
    w carries and off the codes the decoder saw; guidance instead amplifies what the decoder does with the edit,
    which on the tiny world removed glasses that alpha alone could not. The mask m (B, T, 1, h, w) in [0, 1], the
    attribute's region per frame, keeps the rest of every frame on the unedited code (README, "Edit guidance").
    `interval` (lo, hi) in timesteps applies s only at steps with lo <= t < hi and s = 0 elsewhere (guidance in a
    limited interval, Kynkaanniemi et al. 2024); None: every step."""

    def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        plain = unedited(z_t, t)
        factor = torch.as_tensor(1.0 + scale)
        if interval is not None:  # per video when t is (B,): (B, 1, ..., 1)
            inside = (t >= interval[0]) & (t < interval[1])
            factor = (1.0 + scale * inside.float()).reshape(-1, *[1] * (plain.dim() - 1))
        change = factor.to(plain) * (edited(z_t, t) - plain)
        return plain + (change if mask is None else mask.to(change) * change)

    return eps


def check_invert_steps(ddim: DDIM, invert_steps: object) -> None:
    """The reference's inversion steps: a positive whole number that, on the trailing grid, divides T (diffusers'
    inverse step reads alpha at t - T // N). Otherwise an `InputError` (a `ValueError`) naming the rule."""
    if isinstance(invert_steps, bool) or not isinstance(invert_steps, int) or invert_steps < 1:
        raise InputError(f"invert_steps must be a positive whole number, got {invert_steps!r}")
    if ddim.config.timestep_spacing == "trailing" and ddim.num_train_timesteps % invert_steps:
        raise InputError(f"invert_steps={invert_steps} must divide {ddim.num_train_timesteps} with trailing "
                         "timestep spacing (DDIM.invert)")


class TalkingHeadModel(PretrainedFolder, nn.Module):
    """E_img + E_sem + video eps_theta + E_ldm + DDIM: one reference and landmark images in, frames out."""

    config_file = CONFIG_FILE
    description = "stage-3 video model"
    parts = {"semantic_encoder": SemanticEncoder, "unet": ConditionalUNet, "landmark_encoder": LandmarkEncoder}

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
        window_batch_size: int = 4,
    ):
        super().__init__()
        check_invert_steps(ddim, invert_steps)
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
        self.window_batch_size = window_batch_size

    # ----- conditions ------------------------------------------------------------------------------------
    def landmark_features(self, landmark_images: torch.Tensor, reference_image: torch.Tensor) -> LandmarkFeatures:
        """E_ldm: (B, T, 3, S, S) and (B, 3, S, S) -> F^{1:T}."""
        return self.landmark_encoder(landmark_images, reference_image)

    def denoiser(
        self,
        z_sem: torch.Tensor,
        landmark_images: torch.Tensor | FrameSource,
        reference_landmark_image: torch.Tensor,
    ) -> Denoiser:
        """eps_theta(Z_t, t | z_sem, F^{1:T}) over any number of frames, window by window.

        z_sem is (B, Z), shared by the frames, or (B, T, Z), one code per frame (an edit ramping over time).
        `landmark_images` is a tensor (B, T, 3, S, S) in [0, 1] or a function giving the images of a slice of
        frames (so a long video's landmark images need never exist all at once). F is computed by E_ldm for
        each window when the window is denoised, at every step: E_ldm costs a fraction of the denoiser, and
        keeping F for every frame would grow with the length (at 512 px its residuals are ~5 MB a frame).
        `window_batch_size` windows are denoised in one call; the result does not depend on it.
        """
        window, overlap, per_call = self.num_frames, self.window_overlap, self.window_batch_size
        images = landmark_images if callable(landmark_images) else landmark_images.__getitem__
        per_frame = z_sem.dim() == 3

        def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            batch, total = z_t.shape[:2]  # z_t (B, T, C, h, w)
            out = torch.zeros_like(z_t)
            count = torch.zeros(total, device=z_t.device, dtype=z_t.dtype)
            starts = window_starts(total, window, overlap)
            length = min(window, total)  # every window has this length (window_starts makes none short)
            # Up to `window_batch_size` windows go through E_ldm and the denoiser as one batch: one call per
            # group instead of per window, while memory stays bounded by the group, not the video length.
            for first in range(0, len(starts), per_call):
                group = starts[first:first + per_call]
                parts = [slice(start, start + length) for start in group]
                frames = torch.cat([images((slice(None), part)) for part in parts]).to(z_t.device)  # (G*B, W, 3, S, S)
                reference = reference_landmark_image.repeat(len(group), 1, 1, 1)  # (G*B, 3, S, S)
                features = self.landmark_features(frames, reference)
                codes = torch.cat([z_sem[:, part] for part in parts]) if per_frame else z_sem.repeat(len(group), 1)
                windows = torch.cat([z_t[:, part] for part in parts])  # (G*B, W, C, h, w)
                steps = t.repeat(len(group)) if t.numel() == batch > 1 else t  # per-video timesteps follow the videos
                predicted = self.unet(windows, steps, codes, features.cond, features.residuals or None)
                for part, prediction in zip(parts, predicted.split(batch), strict=True):
                    out[:, part] += prediction
                    count[part] += 1
            return out / count[None, :, None, None, None]

        return eps

    def evaluations_per_frame(self, num_frames: int, steps: int | None = None) -> float:
        """Denoiser frame-evaluations per generated frame: steps x the windows' overlap factor (the reference's
        inversion, once per request, not counted). The figure the field compares (steps x CFG for others)."""
        length = min(self.num_frames, num_frames)
        windows = len(window_starts(num_frames, self.num_frames, self.window_overlap))
        return (steps or self.sample_steps) * windows * length / num_frames

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
        z0 = self.autoencoder.encode(image)[:, None].expand(-1, self.num_frames, -1, -1, -1)  # (B, F, C, h, w)
        return z_sem, self.invert_still(z0, z_sem, reference_landmark_image)

    @torch.no_grad()
    def invert_still(self, z0: torch.Tensor, z_sem: torch.Tensor, reference_landmark_image: torch.Tensor,
                     **edit: object) -> torch.Tensor:
        """A still window's clean latents (B, F, C, h, w), driven by the reference's own landmark image, -> its
        Z_T (B, 1, C, h, w) by DDIM inversion under z_sem, averaged over the frames. `edit`: the keywords of
        `edit_denoiser`, to invert with the same guided denoiser that will sample."""
        still = reference_landmark_image[:, None].expand(-1, z0.shape[1], -1, -1, -1)
        eps = self.edit_denoiser(z_sem, still, reference_landmark_image, **edit)
        return self.ddim.invert(eps, z0, self.invert_steps).mean(dim=1, keepdim=True)

    # ----- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(
        self,
        z_T: torch.Tensor,
        z_sem: torch.Tensor,
        landmark_images: torch.Tensor | FrameSource,
        reference_landmark_image: torch.Tensor,
        num_frames: int,
        steps: int | None = None,
        progress: bool = False,
        unedited_z_sem: torch.Tensor | None = None,
        edit_guidance: float = 0.0,
        edit_mask: torch.Tensor | None = None,
        edit_guidance_interval: tuple[float, float] = (0.0, 1.0),
    ) -> torch.Tensor:
        """Z_T (B, 1 or T, C, h, w), z_sem (B, Z) or (B, T, Z) -> the clean latents Z_0 (B, T, C, h, w).

        With `unedited_z_sem`, z_sem is an edited code, and `edit_guidance` s > 0 amplifies the edit at the steps
        whose t / T lies in `edit_guidance_interval` [lo, hi) (all by default), `edit_mask` (B, 1 or T, 1, h, w)
        confines it to a region (`edit_guided`); either costs a second denoiser pass."""
        z_T = z_T.expand(z_T.shape[0], num_frames, *z_T.shape[2:]).contiguous()  # the reference's Z_T per frame
        eps = self.edit_denoiser(z_sem, landmark_images, reference_landmark_image, unedited_z_sem, edit_guidance,
                                 edit_mask, edit_guidance_interval)  # fmt: skip
        return self.ddim.sample(eps, z_T, steps or self.sample_steps, progress=progress)

    def edit_denoiser(
        self,
        z_sem: torch.Tensor,
        landmark_images: torch.Tensor | FrameSource,
        reference_landmark_image: torch.Tensor,
        unedited_z_sem: torch.Tensor | None = None,
        edit_guidance: float = 0.0,
        edit_mask: torch.Tensor | None = None,
        edit_guidance_interval: tuple[float, float] = (0.0, 1.0),
    ) -> Denoiser:
        """`denoiser`, and with `unedited_z_sem` an edited z_sem guided and confined as `denoise` says
        (`edit_guided`; the interval in fractions of T)."""
        eps = self.denoiser(z_sem, landmark_images, reference_landmark_image)
        if unedited_z_sem is not None and (edit_guidance or edit_mask is not None):
            plain = self.denoiser(unedited_z_sem, landmark_images, reference_landmark_image)
            lo, hi = (bound * self.ddim.num_train_timesteps for bound in edit_guidance_interval)  # in timesteps
            eps = edit_guided(eps, plain, edit_guidance, edit_mask, (lo, hi))
        return eps

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
        """Z_T (B, 1 or T, C, h, w), z_sem (B, Z) or (B, T, Z), landmark images (B, T, 3, S, S) ->
        frames (B, T, 3, R, R) in [-1, 1]. All frames decoded at once: for short clips (training samples,
        tests); `FaceEditTalkerPipeline` decodes and writes long videos batch by batch."""
        batch, num_frames = landmark_images.shape[:2]
        z0 = self.denoise(z_T, z_sem, landmark_images, reference_landmark_image, num_frames, steps, progress)
        return self.autoencoder.decode(z0.flatten(0, 1)).unflatten(0, (batch, num_frames))

    # ----- persistence -----------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {
            "resolution": self.resolution,
            "landmark_image_size": self.landmark_image_size,
            "num_frames": self.num_frames,
            "window_overlap": self.window_overlap,
            "autoencoder": self.autoencoder.describe(),
            "diffusion": self.ddim.config_dict(),
            "sample_steps": self.sample_steps,
            "invert_steps": self.invert_steps,
            "window_batch_size": self.window_batch_size,
        }

    @classmethod
    def _from_parts(cls, directory: Path, config: dict, parts: dict, autoencoder_path: str | None = None,
                    **_) -> TalkingHeadModel:
        """A stage-3 export folder; `autoencoder_path` overrides where the VAE weights live."""
        names = ("resolution", "landmark_image_size", "num_frames", "window_overlap", "sample_steps", "invert_steps",
                 "window_batch_size")
        return cls(autoencoder=build_exported_autoencoder(config, autoencoder_path, directory),
                   ddim=DDIM(**config["diffusion"]),
                   **{k: config[k] for k in names if k in config}, **parts)  # fmt: skip
