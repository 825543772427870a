"""Reading talking clips (docs/design.md, "Data on disk"; written by `scripts/preprocess.py` or the synthetic set).

`<root>/<clip_id>/`: `frames.mp4` (or `frames/*.png|jpg`), `audio.wav` (16 kHz mono), `landmarks.npy`
(T x 478 x 3 float32, image-normalised), `meta.json`, optionally `poses.npy` and `audio_features/<encoder>.npy`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile
import torch
from PIL import Image
from torch.utils.data import Dataset

from faceedittalker.data.audio import SAMPLE_RATE, feature_cache_path
from faceedittalker.data.clip_latents import check_clip_latents, clip_latent_path, read_clip_latents
from faceedittalker.errors import InputError
from faceedittalker.landmarks.render import default_thickness, render_sequence

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
    """The complete clip folders directly under `root`, sorted (hidden ones, such as a writer's unfinished temporary
    folder, are skipped)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"clip folder not found: {root}")
    clips = sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_clip_folder(p))
    if not clips:
        raise InputError(f"no clip folders (frames.mp4, audio.wav, landmarks.npy, meta.json) under {root}")
    return clips


def read_frames(folder: str | os.PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames [start, stop) of a clip as (T, H, W, 3) uint8, in one pass."""
    folder = Path(folder)
    if (folder / "frames").is_dir():
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in _frame_files(folder)[start:stop]])
    frames = []
    for index, frame in _decoded(folder):
        if stop is not None and index >= stop:
            break
        if index >= start:
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def iter_frames(folder: str | os.PathLike) -> Iterator[np.ndarray]:
    """Every frame of a clip in order as (H, W, 3) uint8, decoded lazily (a long clip never sits in memory)."""
    folder = Path(folder)
    if (folder / "frames").is_dir():
        for path in _frame_files(folder):
            yield np.asarray(Image.open(path).convert("RGB"))
        return
    for _, frame in _decoded(folder):
        yield frame.to_ndarray(format="rgb24")


def frames_to_tensor(frames: np.ndarray, resolution: int | None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, R, R) float in [-1, 1], area-resized to `resolution` when it differs."""
    if resolution is not None and frames.shape[1:3] != (resolution, resolution):
        frames = np.stack([cv2.resize(f, (resolution, resolution), interpolation=cv2.INTER_AREA) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 127.5 - 1.0


def read_frames_at(folder: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """The frames at `indices` (any order, repeats allowed) as (len, H, W, 3) uint8; an mp4 is decoded once,
    up to the last index needed."""
    folder = Path(folder)
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame index given")
    if (folder / "frames").is_dir():
        files = _frame_files(folder)
        return np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in indices])
    wanted, last, found = set(indices), max(indices), {}
    for index, frame in _decoded(folder):
        if index in wanted:
            found[index] = frame.to_ndarray(format="rgb24")
        if index >= last:
            break
    missing = wanted - set(found)
    if missing:
        raise InputError(f"{folder / 'frames.mp4'} has no frame {min(missing)} (it has {len(found)} of those asked)")
    return np.stack([found[i] for i in indices])


def _decoded(folder: Path) -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, frame) of `frames.mp4`, decoded lazily; callers may stop early."""
    return decode_frames(folder / "frames.mp4")


def decode_frames(path: str | os.PathLike) -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, frame) of a video file's first video stream, decoded lazily; callers may stop early."""
    with av.open(str(path)) as container:
        # Single-threaded on purpose: leaving a frame-threaded decoder early (callers stop at the last frame they
        # need) can deadlock in avcodec_free_context (seen with PyAV 18 after ~2000 reads during training).
        yield from enumerate(container.decode(container.streams.video[0]))


def read_meta(folder: str | os.PathLike) -> dict:
    """A clip's `meta.json`; unreadable JSON or a missing/invalid `num_frames` or `fps` is an `InputError`."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path} must hold a JSON object, not {type(meta).__name__}")
    for key in ("num_frames", "fps"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < (0 if key == "num_frames" else 1):
            raise InputError(f"{path}: '{key}' must be a {'non-negative' if key == 'num_frames' else 'positive'} "
                             f"number, got {value!r}")
    return meta


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "frames").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def read_clip(folder: str | os.PathLike) -> Clip:
    """Everything in one clip folder; a missing or incomplete folder is an `InputError`."""
    folder = Path(folder)
    if not is_clip_folder(folder):
        raise InputError(f"not a complete clip folder: {folder}")
    meta = read_meta(folder)
    audio, rate = soundfile.read(folder / "audio.wav", dtype="float32", always_2d=False)
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise InputError(f"{folder / 'audio.wav'} must be 16 kHz mono (is {rate} Hz, shape {audio.shape})")
    landmarks = np.load(folder / "landmarks.npy")
    return Clip(read_frames(folder), audio, landmarks, meta)


class ClipWindowDataset(Dataset):
    """Windows of `num_frames` frames from the clips under `root` (stage 3, Alg. 3).

    Each item: `frames` (T, 3, R, R) in [-1, 1], `landmarks` (T, 478, 3), `audio` (span x 640 samples),
    `reference` (3, R, R) another frame of the same clip, `reference_landmarks` (478, 3), `frame_stride`;
    `landmark_images` (T, 3, S, S) in [0, 1] and `reference_landmark_image` (3, S, S) when
    `landmark_image_size` is set (drawn by `render_landmarks`, as at inference); `audio_features` (T, D) when
    `encoder_name` is given (read from the clip's feature cache).

    Stride augmentation (paper Sec. V-A): every window exists once for each stride in `frame_strides` that fits
    the clip, so the seeded shuffle mixes them. The reference frame is drawn by a generator seeded with
    (seed, item): the same window always gets the same reference, so resumed runs replay exactly.
    `load_frames=False` skips video decoding (the landmark predictor needs only landmarks and audio features),
    `load_audio=False` the raw waveform (stage 3 reads cached features; windows of mixed strides differ in length).
    `latent_key` (stage 3 with `stage3.video.latent_cache=true`): instead of `frames` and `reference`, the cached
    `latents` (T, C, h, w) of the window and the reference's `reference_z_sem` (Z,) from `<clip>/latents/<key>`
    (`faceedittalker.data.clip_latents`); frames.mp4 is not opened.
    `split="train"|"val"` with `val_every=k` keeps the clips whose index is not / is a multiple of k.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        num_frames: int = 16,
        frame_strides: int | Sequence[int] = 1,
        window_step: int = 1,
        encoder_name: str | None = None,
        seed: int = 0,
        resolution: int | None = None,
        landmark_image_size: int | None = None,
        landmark_thickness: int | None = None,
        load_frames: bool = True,
        load_audio: bool = True,
        val_every: int = 0,
        split: str = "all",
        latent_key: str | None = None,
    ):
        self.clips = list_clips(root)
        if split not in ("all", "train", "val"):
            raise ValueError(f"split must be all, train or val, got {split!r}")
        if split != "all" and val_every:  # every val_every-th clip is held out (whole clips: unseen speech)
            self.clips = [c for i, c in enumerate(self.clips) if (i % val_every == 0) == (split == "val")]
        elif split == "val":
            self.clips = []
        strides = [frame_strides] if isinstance(frame_strides, int) else list(frame_strides)
        if not strides or min(strides) < 1:
            raise InputError(f"frame_strides must be positive integers, got {frame_strides}")
        self.num_frames, self.encoder_name, self.seed = num_frames, encoder_name, seed
        self.resolution, self.load_frames, self.load_audio = resolution, load_frames, load_audio
        self.landmark_image_size = landmark_image_size
        self.landmark_thickness = landmark_thickness or default_thickness(landmark_image_size or 512)
        self.meta = [read_meta(clip) for clip in self.clips]
        self.index: list[tuple[int, int, int]] = []  # (clip, first frame, stride)
        for clip_index, meta in enumerate(self.meta):
            length = int(meta["num_frames"])
            for stride in strides:
                span = (num_frames - 1) * stride + 1
                self.index += [(clip_index, start, stride) for start in range(0, length - span + 1, window_step)]
        if not self.index and split != "val":
            raise InputError(f"no clip under {root} has {(num_frames - 1) * min(strides) + 1} frames")
        self.latent_key = latent_key if load_frames else None
        if self.latent_key is not None:  # every clip's cache header, checked now rather than mid-run
            for clip, meta in zip(self.clips, self.meta, strict=True):
                check_clip_latents(clip_latent_path(clip, latent_key), int(meta["num_frames"]))
        if encoder_name is not None:
            missing = [c for c in self.clips if not feature_cache_path(c, encoder_name).is_file()]
            if missing:
                raise InputError(
                    f"{len(missing)} clips have no cached {encoder_name!r} audio features, e.g. "
                    f"{missing[0]} (run scripts/audio_features.py)"
                )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        clip_index, start, stride = self.index[item]
        folder, meta = self.clips[clip_index], self.meta[clip_index]
        span = (self.num_frames - 1) * stride + 1
        window = list(range(start, start + span, stride))
        reference_index = int(np.random.default_rng([self.seed, item]).integers(meta["num_frames"]))
        all_landmarks = np.load(folder / "landmarks.npy", mmap_mode="r")
        landmarks = np.array(all_landmarks[window], dtype=np.float32)  # (T, 478, 3)
        reference_landmarks = np.array(all_landmarks[reference_index], dtype=np.float32)
        result = {
            "landmarks": torch.from_numpy(landmarks),
            "reference_landmarks": torch.from_numpy(reference_landmarks),
            "frame_stride": stride,
        }
        if self.load_audio:  # the raw waveform of the span (its length depends on the stride)
            samples_per_frame = int(meta.get("sample_rate", SAMPLE_RATE) / meta["fps"])
            audio, _ = soundfile.read(
                folder / "audio.wav",
                start=start * samples_per_frame,
                stop=(start + span) * samples_per_frame,
                dtype="float32",
            )
            result["audio"] = torch.from_numpy(audio)
        if self.load_frames:
            if self.latent_key is not None:  # the frozen encoders' outputs, cached: no video decoding at all
                result["latents"], result["reference_z_sem"] = read_clip_latents(
                    clip_latent_path(folder, self.latent_key), int(meta["num_frames"]), start, start + span, stride,
                    reference_index)
            else:
                frames = read_frames_at(folder, [*window, reference_index])  # one decode for both
                images = frames_to_tensor(frames, self.resolution)
                result["frames"], result["reference"] = images[:-1], images[-1]
        if self.landmark_image_size is not None:
            points = np.concatenate([landmarks, reference_landmarks[None]])  # (T + 1, 478, 3)
            drawn = render_sequence(points, self.landmark_image_size, self.landmark_thickness)
            drawn = torch.from_numpy(drawn).movedim(-1, -3).float() / 255.0  # (T + 1, 3, S, S)
            result["landmark_images"], result["reference_landmark_image"] = drawn[:-1], drawn[-1]
        if self.encoder_name is not None:
            features = np.load(feature_cache_path(folder, self.encoder_name), mmap_mode="r")
            result["audio_features"] = torch.from_numpy(np.array(features[window], dtype=np.float32))
        return result
