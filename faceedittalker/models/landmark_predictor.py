"""P_ldm, the landmark predictor (paper Eq. 7): L^{1:T} = P_ldm(A^{1:T}, x_ref).

Audio features A^{1:T} at the video frame rate (wav2vec2 or log-mel, `faceedittalker.data.audio`) and the
reference face's 478 MediaPipe landmarks in, a landmark sequence in the reference's pose out.

From AniPortrait (Audio2Mesh): the network predicts per-frame *offsets of the reference's pose-free mesh*, its
output head is zero-initialised (an untrained model predicts "no motion"), and it is trained with an L1 loss;
head pose is not predicted here (AniPortrait has a separate Audio2Pose; at inference the reference's pose is kept
or a pose sequence is applied afterwards).

Ours: (1) instead of MediaPipe's camera model and canonical mesh, "pose-free" is a per-frame similarity
alignment (Umeyama) of the frame's `STABLE_POINTS` onto the reference's, which removes head rotation, scale
and translation and keeps the mouth, lid and brow motion; offsets are in "face units" (the RMS radius of the
reference's stable points), so they do not depend on the image size or how large the face is. (2) The
"multi-scale temporal network" is a 1-D U-Net over time (residual Conv1d blocks at T, T/2, T/4, ... with skip
connections), fully convolutional, so it runs on any length. (3) Identity conditioning: the reference mesh (in
face units) is projected and added to every frame, so the offsets can depend on mouth width, lip thickness etc.
(4) `landmark_loss` can weight the lip points more.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from faceedittalker.landmarks.topology import LIP_POINTS
from faceedittalker.models.layers import group_count

__all__ = [
    "STABLE_POINTS", "face_frame", "face_units", "rigid_align", "landmark_targets", "LandmarkPredictor",
    "predict_landmarks", "landmark_loss",
]  # fmt: skip

# MediaPipe face-mesh points that neither speech nor blinks move (checked against the canonical mesh and the
# synthetic face, where jaw opening, lip spread and blinks move none of them): the forehead and nose midline,
# two forehead points beside the midline, the eye corners (not the lids), and the temple / cheek-bone points
# on the face outline at eye and nose level (not the jaw line). Lips, jaw, chin, lids and brows are left out.
STABLE_POINTS: tuple[int, ...] = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4,  # midline: forehead top -> between the brows -> nose bridge -> tip
    109, 338,  # forehead, either side of point 10
    33, 133, 362, 263,  # eye corners: right outer, right inner, left inner, left outer
    127, 356, 234, 454,  # face outline: temples (eye level), cheek bones (nose level)
)  # fmt: skip


def face_frame(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (B, 1, 3) and scale (B, 1, 1) of a face (B, N, 3): centroid and RMS radius of its stable points."""
    stable = reference[:, STABLE_POINTS]  # (B, K, 3)
    centre = stable.mean(dim=1, keepdim=True)  # (B, 1, 3)
    scale = (stable - centre).square().sum(dim=-1).mean(dim=1, keepdim=True).sqrt()[..., None]  # (B, 1, 1)
    return centre, scale


def face_units(reference: torch.Tensor) -> torch.Tensor:
    """A face (B, N, 3) in its own face units: (reference - centre) / scale, the model's identity input."""
    centre, scale = face_frame(reference)
    return (reference - centre) / scale


def rigid_align(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Remove head motion: map each frame (B, T, N, 3) onto the reference (B, N, 3) by the similarity transform
    (rotation, uniform scale, translation; no reflection) that best fits the frame's stable points to the
    reference's (Umeyama 1991), applied to every point of the frame.

    Coordinates are used as given: image-normalised landmarks need a square image (x and y in the same unit);
    MediaPipe's z is in image widths, close enough to x. Computed in float64 (targets only, no gradients needed).
    """
    dtype = points.dtype
    frames = points.double()  # (B, T, N, 3)
    target = reference.double()[:, None, STABLE_POINTS]  # (B, 1, K, 3)
    source = frames[:, :, STABLE_POINTS]  # (B, T, K, 3)
    source_mean, target_mean = source.mean(dim=2, keepdim=True), target.mean(dim=2, keepdim=True)  # (B, T|1, 1, 3)
    source_c, target_c = source - source_mean, target - target_mean  # (B, T|1, K, 3)
    covariance = target_c.transpose(-1, -2) @ source_c / source.shape[2]  # (B, T, 3, 3)
    u, singular, vh = torch.linalg.svd(covariance)  # (B, T, 3, 3), (B, T, 3), (B, T, 3, 3)
    # Flip the weakest axis when the best orthogonal map would be a reflection.
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))  # (B, T)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.ones_like(singular)  # (B, T, 3)
    d[..., -1] = sign
    rotation = u @ (d[..., None] * vh)  # (B, T, 3, 3): U diag(d) V^T
    variance = source_c.square().sum(dim=(-1, -2)) / source.shape[2]  # (B, T)
    scale = (singular * d).sum(dim=-1) / variance.clamp_min(1e-12)  # (B, T)
    # y = s R (x - mean_x) + mean_y, for row vectors: (x - mean_x) R^T s + mean_y.
    aligned = scale[..., None, None] * (frames - source_mean) @ rotation.transpose(-1, -2) + target_mean
    return aligned.to(dtype)  # (B, T, N, 3)


def landmark_targets(landmarks: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Training targets (B, T, N, 3): each frame aligned onto the reference, minus the reference, in face units."""
    _, scale = face_frame(reference)  # (B, 1, 1)
    aligned = rigid_align(landmarks, reference)  # (B, T, N, 3)
    return (aligned - reference[:, None]) / scale[:, None]  # (B, T, N, 3)


def _norm(channels: int, group_channels: int) -> nn.GroupNorm:
    """GroupNorm with about `group_channels` channels per group (at least one group; the count divides C)."""
    return nn.GroupNorm(group_count(channels, channels // group_channels), channels)


def _frame_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm over the channel groups of each frame, (B, C, T) -> (B, C, T).

    Per frame, not over time, so a frame's features do not depend on the sequence length, the padding or
    the rest of the clip: the model behaves the same on a 1 s window and on a 1 min clip.
    """
    b, c, t = x.shape
    return norm(x.transpose(1, 2).reshape(b * t, c)).reshape(b, t, c).transpose(1, 2)


class TemporalResBlock(nn.Module):
    """Norm -> SiLU -> Conv1d -> Norm -> SiLU -> Dropout -> Conv1d, + (projected) skip: (B, C_in, T) -> (B, C, T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, group_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels, group_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = _norm(out_channels, group_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(_frame_norm(self.norm1, x)))  # (B, C, T)
        h = self.conv2(self.dropout(F.silu(_frame_norm(self.norm2, h))))  # (B, C, T)
        return self.skip(x) + h  # (B, C, T)


class LandmarkPredictor(ModelMixin, ConfigMixin):
    """P_ldm: audio features (B, T, audio_dim) + reference (B, N, 3) in face units -> offsets (B, T, N, 3).

    A 1-D U-Net over time at `num_scales` temporal resolutions (T, T/2, T/4, ...), `blocks_per_scale` residual
    blocks per scale on the way down and up, constant width `hidden_dim`. The GroupNorms normalise each frame
    over groups of `norm_group_channels` channels (fewer channels per group, as in 8 groups of a 32-wide model,
    normalise the audio signal away: a tiny model then learns much more slowly). With the defaults the receptive field
    is about +-3.4 s (+-85 frames at 25 fps) and there are 9.2 M parameters (wav2vec2-base features, 478 points).
    """

    @register_to_config
    def __init__(
        self,
        audio_dim: int = 768,
        num_landmarks: int = 478,
        hidden_dim: int = 256,
        num_scales: int = 3,
        blocks_per_scale: int = 2,
        kernel_size: int = 5,
        dropout: float = 0.1,
        norm_group_channels: int = 32,
    ):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-length convolutions), got {kernel_size}")
        block = functools.partial(
            TemporalResBlock, kernel_size=kernel_size, group_channels=norm_group_channels, dropout=dropout
        )
        self.audio_proj = nn.Linear(audio_dim, hidden_dim)
        self.reference_proj = nn.Linear(num_landmarks * 3, hidden_dim)
        self.down = nn.ModuleList(
            nn.ModuleList(block(hidden_dim, hidden_dim) for _ in range(blocks_per_scale)) for _ in range(num_scales)
        )
        self.downsample = nn.ModuleList(
            nn.Conv1d(hidden_dim, hidden_dim, 3, stride=2, padding=1) for _ in range(num_scales - 1)
        )
        self.upsample = nn.ModuleList(nn.Conv1d(hidden_dim, hidden_dim, 3, padding=1) for _ in range(num_scales - 1))
        # Up path: the first block of each scale takes the upsampled features concatenated with the skip.
        self.up = nn.ModuleList(
            nn.ModuleList(block(2 * hidden_dim if i == 0 else hidden_dim, hidden_dim) for i in range(blocks_per_scale))
            for _ in range(num_scales - 1)
        )
        self.norm_out = _norm(hidden_dim, norm_group_channels)
        self.head = nn.Linear(hidden_dim, num_landmarks * 3)
        # AniPortrait: a zero head, so training starts from "the reference face, not moving".
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, audio_features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """audio_features (B, T, audio_dim), reference (B, N, 3) in face units -> offsets (B, T, N, 3), face units."""
        batch, length, _ = audio_features.shape
        h = self.audio_proj(audio_features) + self.reference_proj(reference.flatten(1))[:, None]  # (B, T, H)
        # Pad T to a multiple of 2^(num_scales - 1) so every downsampling halves it exactly; cropped at the end.
        multiple = 2 ** (self.config.num_scales - 1)
        padded = -(-length // multiple) * multiple
        h = F.pad(h.transpose(1, 2), (0, padded - length))  # (B, H, T')
        skips = []
        for scale, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h)  # (B, H, T' / 2^scale)
            if scale < len(self.downsample):
                skips.append(h)
                h = self.downsample[scale](h)  # (B, H, T' / 2^(scale + 1))
        for scale in reversed(range(len(self.up))):
            h = self.upsample[scale](F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (B, H, T' / 2^scale)
            h = torch.cat([h, skips[scale]], dim=1)  # (B, 2H, T' / 2^scale)
            for block in self.up[scale]:
                h = block(h)  # (B, H, T' / 2^scale)
        h = F.silu(_frame_norm(self.norm_out, h))[..., :length]  # (B, H, T)
        offsets = self.head(h.transpose(1, 2))  # (B, T, N * 3)
        return offsets.view(batch, length, self.config.num_landmarks, 3)  # (B, T, N, 3)


def predict_landmarks(
    model: LandmarkPredictor, audio_features: torch.Tensor, reference_landmarks: torch.Tensor
) -> torch.Tensor:
    """Eq. 7: audio features (B, T, D) + reference landmarks (B, N, 3), image-normalised -> the landmark
    sequence (B, T, N, 3), image-normalised, in the reference's pose (reference + offsets x face scale)."""
    _, scale = face_frame(reference_landmarks)  # (B, 1, 1)
    offsets = model(audio_features, face_units(reference_landmarks))  # (B, T, N, 3)
    return reference_landmarks[:, None] + offsets * scale[:, None]  # (B, T, N, 3)


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, mouth_weight: float = 1.0) -> torch.Tensor:
    """L1 between offsets (B, T, N, 3) (AniPortrait), lip points weighted by `mouth_weight`.

    A weighted mean (weights normalised to mean 1 over the points), so `mouth_weight=1` is the plain mean L1
    and the loss stays on the same scale whatever the weight.
    """
    weights = torch.ones(predicted.shape[-2], dtype=predicted.dtype, device=predicted.device)  # (N,)
    weights[[i for i in LIP_POINTS if i < len(weights)]] = mouth_weight
    weights = weights / weights.mean()
    return ((predicted - target).abs() * weights[:, None]).mean()
