"""Per-clip cache of what stage 3's frozen encoders make of every frame (`stage3.video.latent_cache=true`).

Stage 3 keeps E_img and E_sem frozen, so Z0 = E_img(frame) and z_sem = E_sem(frame) of a clip never change during
a run: computing them once per clip spares the VAE (and the video decoding) at every training step.

    <clip>/latents/<key>.safetensors     `latents` (T, C, h, w) float16 (as stage 1's image cache: half the size),
                                         `z_sem` (T, Z) float32, metadata {"key", "num_frames"}

`key` fingerprints what the values depend on: E_img's description, E_sem's weights and the frame resolution, so a
new stage-1 export or resolution gets a new file instead of stale values. Files are written atomically (a
temporary file renamed when complete); a missing, truncated or foreign file is rewritten by `write_clip_latents`
(with a logged note) and is a clear `InputError` when the dataset reads it (no silent fallback to decoding).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from faceedittalker.errors import InputError
from faceedittalker.utils.files import atomic_write

log = logging.getLogger(__name__)

LATENTS_DIR = "latents"


def clip_latent_path(clip: str | os.PathLike, key: str) -> Path:
    return Path(clip) / LATENTS_DIR / f"{key}.safetensors"


def latent_cache_key(autoencoder: nn.Module, semantic_encoder: nn.Module, resolution: int) -> str:
    """A short fingerprint of E_img's description, E_sem's weights and the resolution."""
    digest = hashlib.sha256(json.dumps([autoencoder.describe(), resolution], sort_keys=True).encode())
    for name, tensor in sorted(semantic_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def encode_frames(autoencoder: nn.Module, frames: torch.Tensor, batch_size: int,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Z0 of (N, 3, R, R) frames in chunks of `batch_size` (the VAE's activations at 512 px are ~1 GB a frame), under
    autocast to `dtype` when given (bf16 mixed precision); float32 out."""
    chunks = []
    for chunk in frames.split(max(int(batch_size), 1)):
        with torch.autocast(chunk.device.type, dtype=dtype, enabled=dtype is not None):
            chunks.append(autoencoder.encode(chunk).float())
    return torch.cat(chunks)


def read_clip_latents(path: Path, num_frames: int, start: int, stop: int, stride: int,
                      reference: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Z0 of frames start:stop:stride (T, C, h, w) and z_sem of frame `reference` (Z,), float32, read from the
    memory-mapped file without loading the rest of the clip; an unreadable file, or one for another clip length,
    is an `InputError`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            _check_header(path, f, num_frames)
            latents = f.get_slice("latents")[start:stop][::stride]
            z_sem = f.get_slice("z_sem")[reference : reference + 1][0]
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"latent cache {path} is unreadable ({err}); {REWRITE}") from None
    return latents.float(), z_sem.float()


def check_clip_latents(path: Path, num_frames: int) -> None:
    """Raise `InputError` unless `path` is a cache file for a clip of `num_frames` frames (reads the header only)."""
    if not path.is_file():
        raise InputError(f"latent cache {path} is missing; {REWRITE}")
    try:
        with safe_open(str(path), framework="pt") as f:
            _check_header(path, f, num_frames)
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"latent cache {path} is unreadable ({err}); {REWRITE}") from None


REWRITE = "delete it and rerun stage 3 with stage3.video.latent_cache=true to rewrite it"


def _check_header(path: Path, f, num_frames: int) -> None:
    stored = int((f.metadata() or {}).get("num_frames", -1))
    lengths = {f.get_slice(name).get_shape()[0] for name in ("latents", "z_sem")}
    if stored != num_frames or lengths != {num_frames}:
        raise InputError(f"latent cache {path} holds {sorted(lengths)} frames, the clip {num_frames}; {REWRITE}")


def _is_valid(path: Path, num_frames: int) -> bool:
    with contextlib.suppress(InputError):
        check_clip_latents(path, num_frames)
        return True
    return False


def _frame_batches(folder: Path, resolution: int, batch_size: int) -> Iterator[torch.Tensor]:
    """The clip's frames as (<= batch_size, 3, R, R) tensors in [-1, 1], decoded once, front to back."""
    from faceedittalker.data.clips import frames_to_tensor, iter_frames

    batch: list[np.ndarray] = []
    for frame in iter_frames(folder):
        batch.append(frame)
        if len(batch) == batch_size:
            yield frames_to_tensor(np.stack(batch), resolution)
            batch = []
    if batch:
        yield frames_to_tensor(np.stack(batch), resolution)


@torch.no_grad()
def write_clip_latents(clips: Sequence[Path], num_frames: Sequence[int], autoencoder: nn.Module,
                       semantic_encoder: nn.Module, resolution: int, key: str, batch_size: int = 16,
                       device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> int:
    """Cache Z0 and z_sem of every frame of each clip that has no valid file for `key`; returns how many were
    written. `num_frames` is each clip's length from its meta.json."""
    todo = [(clip, length) for clip, length in zip(clips, num_frames, strict=True)
            if not _is_valid(clip_latent_path(clip, key), length)]  # fmt: skip
    for clip, length in tqdm(todo, desc="caching clip latents", unit="clip", leave=False):
        path = clip_latent_path(clip, key)
        if path.exists():
            log.warning("rewriting the latent cache %s (unreadable or for another clip length)", path)
        latents, codes = [], []
        for frames in _frame_batches(Path(clip), resolution, batch_size):
            frames = frames.to(device)
            latents.append(encode_frames(autoencoder, frames, batch_size, dtype).half().cpu())
            with torch.autocast(frames.device.type, dtype=dtype, enabled=dtype is not None):
                codes.append(semantic_encoder(frames).float().cpu())
        latents_t, codes_t = torch.cat(latents), torch.cat(codes)
        if len(latents_t) != length:
            raise InputError(f"{clip} has {len(latents_t)} frames but its meta.json says {length}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            save_file({"latents": latents_t.contiguous(), "z_sem": codes_t.contiguous()}, str(tmp),
                      metadata={"key": key, "num_frames": str(length)})
    return len(todo)
