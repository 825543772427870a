"""Lip sync: LSE-D, LSE-C and the AV offset, computed as `syncnet_python` (Chung & Zisserman's SyncNet) does.

The field's numbers come from `SyncNetInstance.evaluate` of joonson/syncnet_python with the public
`syncnet_v2.model`; this module reproduces that computation:

- video: 25 fps face crops, 224 x 224, **BGR**, float pixel values 0-255 (no normalisation); every window of 5
  consecutive frames (1, 3, 5, 224, 224) gives one 1024-d lip embedding;
- audio: 16 kHz mono as int16 sample values, `python_speech_features.mfcc` defaults (13 coefficients, 25 ms
  windows every 10 ms = 100 Hz); the window of 20 MFCC steps starting at 4 x frame gives the audio embedding;
- `min_length = min(frames, floor(samples / 640))` and windows start at 0 .. min_length - 6 (the reference stops
  one window short; kept);
- for each offset k in -15..15 (vshift 15, 31 offsets), the mean over windows of the distance
  `pairwise_distance(video[i], audio[i + k])` (L2 with eps 1e-6; audio out of range = zero vector);
- LSE-D ("Min Dist") = the minimum of those 31 means, LSE-C ("AVConf") = their median minus the minimum, AV offset =
  15 - argmin (positive: the audio embedding matching video window i is window i - offset, i.e. the video lags).

The face crop follows `run_pipeline.py`'s `crop_video` on a per-frame face box (there from S3FD; here the box of
this project's MediaPipe face mesh, which is a little taller than S3FD's): box half-size = max(w, h) / 2, centre
and size median-filtered over 13 frames, crop scale 0.4, grey-110 padding, resized to 224 with bilinear
interpolation. The reference goes through ffmpeg JPEGs and an XVID re-encode before SyncNet sees the frames; decoded
frames are used directly here. Scores move by a few hundredths between such pipelines.

Weights: `syncnet_v2.model` (~54 MB, robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model), read from a local
file with `weights_only=True`; when it is missing the metric is skipped with one line saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.signal import medfilt
from torch import nn

SYNCNET_WEIGHTS_FILE = "syncnet_v2.model"
SYNCNET_FPS = 25
SYNCNET_SAMPLE_RATE = 16000
CROP_SIZE = 224
WINDOW_FRAMES = 5
MFCC_STEPS_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20  # 5 frames of MFCC
SAMPLES_PER_FRAME = SYNCNET_SAMPLE_RATE // SYNCNET_FPS  # 640
VSHIFT = 15
EMBEDDING_SIZE = 1024
CROP_SCALE = 0.4
CROP_PAD_GREY = 110
BOX_SMOOTHING = 13


def _conv_block(conv: nn.Module, channels: int, norm: type[nn.Module], pool: nn.Module | None = None,
                inplace: bool = True) -> list[nn.Module]:
    """conv -> batch norm -> ReLU (-> pool): the repeating unit of both SyncNet streams."""
    return [conv, norm(channels), nn.ReLU(inplace=inplace)] + ([pool] if pool is not None else [])


def _head(embedding_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_size))


class SyncNet(nn.Module):
    """SyncNet (the `syncnet_v2` variant): an MFCC stream and a lip stream, each mapping a 0.2 s window to a
    1024-d embedding. Module names and layer positions are those of the released weights, so
    `syncnet_v2.model` loads with `load_state_dict`."""

    def __init__(self, embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        bn2, bn3 = nn.BatchNorm2d, nn.BatchNorm3d
        # Audio: (N, 1, 13, 20) MFCC -> (N, 512, 1, 1).
        self.netcnnaud = nn.Sequential(
            *_conv_block(nn.Conv2d(1, 64, 3, padding=1), 64, bn2, nn.MaxPool2d(1, 1)),
            *_conv_block(nn.Conv2d(64, 192, 3, padding=1), 192, bn2, nn.MaxPool2d(3, stride=(1, 2))),
            *_conv_block(nn.Conv2d(192, 384, 3, padding=1), 384, bn2),
            *_conv_block(nn.Conv2d(384, 256, 3, padding=1), 256, bn2),
            *_conv_block(nn.Conv2d(256, 256, 3, padding=1), 256, bn2, nn.MaxPool2d(3, stride=2)),
            *_conv_block(nn.Conv2d(256, 512, (5, 4)), 512, bn2, inplace=False),
        )
        self.netfcaud = _head(embedding_size)
        self.netfclip = _head(embedding_size)
        # Lips: (N, 3, 5, 224, 224) BGR 0-255 -> (N, 512, 1, 1, 1).
        self.netcnnlip = nn.Sequential(
            *_conv_block(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, bn3,
                         nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, bn3,
                         nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3),
            *_conv_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3,
                         nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(nn.Conv3d(256, 512, (1, 6, 6)), 512, bn3),
        )

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, 1, 13, 20) MFCC windows -> (N, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lips(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, 5, 224, 224) BGR 0-255 windows -> (N, 1024)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def missing_syncnet_reason(weights_dir: str | os.PathLike) -> str | None:
    path = Path(weights_dir).expanduser() / SYNCNET_WEIGHTS_FILE
    if path.is_file():
        return None
    return (f"LSE-D/LSE-C skipped: put SyncNet's {SYNCNET_WEIGHTS_FILE} (robots.ox.ac.uk/~vgg/software/lipsync/data/"
            f"{SYNCNET_WEIGHTS_FILE}) at {path}")  # fmt: skip


def load_syncnet(path: str | os.PathLike) -> SyncNet:
    """SyncNet with the released weights (a plain state dict; loaded with `weights_only=True`). Only BatchNorm's
    `num_batches_tracked` counters, which older PyTorch did not save and evaluation does not use, may be absent."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = SyncNet()
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path} is not a SyncNet state dict: missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")  # fmt: skip
    return model.eval()


def audio_mfcc(waveform: np.ndarray) -> np.ndarray:
    """(13, T) MFCC at 100 Hz of a 16 kHz mono waveform in [-1, 1], computed on int16 sample values as the reference
    (which reads an ffmpeg-written pcm_s16le wav); c0 is the log frame energy, so the scale matters."""
    import python_speech_features

    samples = np.clip(np.round(np.asarray(waveform, dtype=np.float64) * 32768), -32768, 32767).astype(np.int16)
    return python_speech_features.mfcc(samples, SYNCNET_SAMPLE_RATE).T


def num_windows(num_frames: int, num_samples: int) -> int:
    """How many 5-frame windows the reference scores: min(frames, floor(samples / 640)) - 5."""
    return max(0, min(num_frames, num_samples // SAMPLES_PER_FRAME) - WINDOW_FRAMES)


@torch.no_grad()
def sync_embeddings(model: SyncNet, crops_bgr: np.ndarray, waveform: np.ndarray,
                    batch_size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings (N, 1024) each of 224 px BGR face crops (T, 224, 224, 3) uint8 and the matching
    16 kHz waveform, one per scored window."""
    device = next(model.parameters()).device
    mfcc = torch.from_numpy(audio_mfcc(waveform)).float()  # (13, T_mfcc)
    video = torch.from_numpy(np.ascontiguousarray(crops_bgr)).float().permute(3, 0, 1, 2)  # (3, T, 224, 224)
    count = num_windows(len(crops_bgr), len(waveform))
    lips, audio = [], []
    for start in range(0, count, batch_size):
        starts = range(start, min(count, start + batch_size))
        frames = torch.stack([video[:, s:s + WINDOW_FRAMES] for s in starts])  # (B, 3, 5, 224, 224)
        steps = torch.stack([mfcc[None, :, s * MFCC_STEPS_PER_FRAME: s * MFCC_STEPS_PER_FRAME + MFCC_WINDOW]
                             for s in starts])  # (B, 1, 13, 20)
        lips.append(model.forward_lips(frames.to(device)).cpu())
        audio.append(model.forward_audio(steps.to(device)).cpu())
    if not lips:
        raise ValueError(f"too short for SyncNet: {len(crops_bgr)} frames, {len(waveform)} samples "
                         f"(needs at least {WINDOW_FRAMES + 1} frames of both)")  # fmt: skip
    return torch.cat(lips), torch.cat(audio)


def offset_distances(lips: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(2 vshift + 1,) the mean over windows of the distance between lip embedding i and audio embedding i + k,
    k = -vshift .. vshift (zero vectors outside the audio), as the reference's `calc_pdist` + mean."""
    offsets = 2 * vshift + 1
    padded = nn.functional.pad(audio, (0, 0, vshift, vshift))  # (N + 2 vshift, D)
    windows = padded.unfold(0, offsets, 1)[: len(lips)].transpose(1, 2)  # (N, offsets, D)
    distances = nn.functional.pairwise_distance(lips[:, None].expand_as(windows), windows)  # (N, offsets)
    return distances.mean(dim=0)


def sync_scores(lips: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> dict[str, float]:
    """LSE-D (min distance), LSE-C (median - min) and the AV offset (frames) from per-window embeddings."""
    mean_distance = offset_distances(lips, audio, vshift)
    min_distance, best = torch.min(mean_distance, 0)
    return {"lse_d": float(min_distance), "lse_c": float(torch.median(mean_distance) - min_distance),
            "av_offset": int(vshift - best)}  # fmt: skip


def face_boxes(points: np.ndarray) -> np.ndarray:
    """(F, 4) x0, y0, x1, y1 pixel boxes of (F, N, 2) landmark pixels; frames without a face (NaN) take the
    nearest detected frame's box."""
    valid = ~np.isnan(points).any(axis=(1, 2))
    if not valid.any():
        raise ValueError("no face found in any frame")
    boxes = np.full((len(points), 4), np.nan)
    boxes[valid] = np.concatenate([np.nanmin(points[valid], axis=1), np.nanmax(points[valid], axis=1)], axis=1)
    indices = np.flatnonzero(valid)
    nearest = indices[np.abs(np.arange(len(points))[:, None] - indices[None]).argmin(axis=1)]
    return boxes[nearest]


def syncnet_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(F, 224, 224, 3) BGR uint8 face crops of RGB frames (F, H, W, 3), as `run_pipeline.py`'s `crop_video`."""
    half_size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    centre_y, centre_x = (boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2
    # The reference's 13-frame median filter, zero padding at the ends included; clips shorter than 13 frames
    # (which the reference pipeline never scores) use the largest odd kernel that fits, else all boxes would be 0.
    kernel = min(BOX_SMOOTHING, len(frames) - 1 + len(frames) % 2)
    half_size, centre_x, centre_y = (medfilt(v, kernel_size=kernel) for v in (half_size, centre_x, centre_y))
    crops = []
    for frame, s, x, y in zip(frames, half_size, centre_x, centre_y, strict=True):
        pad = int(s * (1 + 2 * CROP_SCALE))
        bgr = np.pad(frame[..., ::-1], ((pad, pad), (pad, pad), (0, 0)), constant_values=CROP_PAD_GREY)
        y, x = y + pad, x + pad  # the box centre in the padded frame; the crop reaches further below the face
        rows = slice(int(y - s), int(y + s * (1 + 2 * CROP_SCALE)))
        columns = slice(int(x - s * (1 + CROP_SCALE)), int(x + s * (1 + CROP_SCALE)))
        face = bgr[rows, columns]
        crops.append(cv2.resize(np.ascontiguousarray(face), (CROP_SIZE, CROP_SIZE)))
    return np.stack(crops)
