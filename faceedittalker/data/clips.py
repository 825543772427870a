"""Reading talking clips (DESIGN §4 layout, written by `scripts/preprocess.py` or the synthetic set).

`<root>/<clip_id>/`: `frames.mp4` (or `frames/*.png|jpg`), `audio.wav` (16 kHz mono), `landmarks.npy`
(T x 478 x 3 float32, image-normalised), `meta.json`, optionally `poses.npy` and `audio_features/<encoder>.npy`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile
import torch
from PIL import Image
from torch.utils.data import Dataset

from faceedittalker.data.audio import SAMPLE_RATE, feature_cache_path
from faceedittalker.errors import InputError

CLIP_FILES = ("audio.wav", "landmarks.npy", "meta.json")


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    audio: np.ndarray  # (num_frames x sample_rate / fps,) float32, 16 kHz mono
    landmarks: np.ndarray  # (T, 478, 3) float32
    meta: dict


def is_clip_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    has_frames = (folder / "frames.mp4").is_file() or (folder / "frames").is_dir()
    return has_frames and all((folder / name).is_file() for name in CLIP_FILES)


def list_clips(root: str | os.PathLike) -> list[Path]:
    """The complete clip folders directly under `root`, sorted (temporary `.partial_*` folders are skipped)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"clip folder not found: {root}")
    clips = sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_clip_folder(p))
    if not clips:
        raise InputError(f"no clip folders (frames.mp4, audio.wav, landmarks.npy, meta.json) under {root}")
    return clips


def read_frames(folder: str | os.PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames [start, stop) of a clip as (T, H, W, 3) uint8."""
    folder = Path(folder)
    if (folder / "frames").is_dir():
        files = sorted(p for p in (folder / "frames").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files[start:stop]])
    frames = []
    with av.open(str(folder / "frames.mp4")) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                break
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def read_clip(folder: str | os.PathLike) -> Clip:
    """Everything in one clip folder; a missing or incomplete folder is an `InputError`."""
    folder = Path(folder)
    if not is_clip_folder(folder):
        raise InputError(f"not a complete clip folder: {folder}")
    meta = json.loads((folder / "meta.json").read_text())
    audio, rate = soundfile.read(folder / "audio.wav", dtype="float32", always_2d=False)
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise InputError(f"{folder / 'audio.wav'} must be 16 kHz mono (is {rate} Hz, shape {audio.shape})")
    landmarks = np.load(folder / "landmarks.npy")
    return Clip(read_frames(folder), audio, landmarks, meta)


class ClipWindowDataset(Dataset):
    """Windows of `num_frames` consecutive frames (stride `frame_stride`) from the clips under `root`.

    Each item: `frames` (T, 3, H, W) float in [-1, 1], `landmarks` (T, 478, 3), `audio` (T x 640 samples),
    `reference` (3, H, W) a random frame of the same clip, `audio_features` (T, D) when `encoder_name` is
    given and cached. Windows start at every `window_step`-th frame.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int = 16,
        frame_stride: int = 1,
        window_step: int = 1,
        encoder_name: str | None = None,
        seed: int = 0,
    ):
        self.clips = list_clips(root)
        self.num_frames, self.frame_stride, self.encoder_name = num_frames, frame_stride, encoder_name
        span = (num_frames - 1) * frame_stride + 1
        self.index: list[tuple[int, int]] = []
        self.meta = [json.loads((clip / "meta.json").read_text()) for clip in self.clips]
        for clip_index, meta in enumerate(self.meta):
            length = int(meta["num_frames"])
            self.index += [(clip_index, start) for start in range(0, length - span + 1, window_step)]
        if not self.index:
            raise InputError(f"no clip under {root} has {span} frames")
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        clip_index, start = self.index[item]
        folder, meta = self.clips[clip_index], self.meta[clip_index]
        span = (self.num_frames - 1) * self.frame_stride + 1
        frames = read_frames(folder, start, start + span)[:: self.frame_stride]
        reference_index = int(self.rng.integers(meta["num_frames"]))
        reference = read_frames(folder, reference_index, reference_index + 1)[0]
        landmarks = np.load(folder / "landmarks.npy", mmap_mode="r")[start : start + span : self.frame_stride]
        samples_per_frame = int(meta.get("sample_rate", SAMPLE_RATE) / meta["fps"])
        audio, _ = soundfile.read(
            folder / "audio.wav",
            start=start * samples_per_frame,
            stop=(start + span) * samples_per_frame,
            dtype="float32",
        )

        def to_tensor(images: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float() / 127.5 - 1.0

        item = {
            "frames": to_tensor(frames),
            "reference": to_tensor(reference),
            "landmarks": torch.from_numpy(np.array(landmarks, dtype=np.float32)),
            "audio": torch.from_numpy(audio),
        }
        if self.encoder_name is not None:
            features = np.load(feature_cache_path(folder, self.encoder_name), mmap_mode="r")
            item["audio_features"] = torch.from_numpy(np.array(features[start : start + span : self.frame_stride]))
        return item
