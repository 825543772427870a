"""The synthetic talking-face set: a small world whose truth is known, to train and check every stage on CPU.

Faces come from `synthetic.face` (a real face's 478-point mesh, varied in shape, colours, pose and
attributes); talking clips move the mouth with the loudness and spectrum of real speech from
`assets/speech/`. Three kinds of set, in the layouts of docs/design.md, "Data on disk":

- `images`:      `<dir>/NNNNNN.png` (+ `landmarks.npy`, N x 478 x 3)                         -> stage 1
- `attributes`:  the same + `CelebAMask-HQ-attribute-anno.txt` (40 CelebA names, +1/-1)       -> stage 2
- `clips`:       `<dir>/<clip_id>/{frames.mp4, audio.wav, landmarks.npy, meta.json}`          -> stage 3

Every sample draws from its own generator seeded by (seed, kind, index): a set is identical for a seed
whatever the number of workers, and the first n samples of a bigger set are the n samples of a smaller one.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import soundfile
from tqdm import tqdm

from faceedittalker import ASSETS_DIR
from faceedittalker.data.attributes import ATTRIBUTE_FILE_NAME, CELEBA_ATTRIBUTES, write_attribute_file
from faceedittalker.data.audio import SAMPLE_RATE, VIDEO_FPS
from faceedittalker.landmarks.topology import mouth_opening
from faceedittalker.synthetic.face import (
    RENDERED_ATTRIBUTES,
    Expression,
    Identity,
    Pose,
    render_face,
    rest_expression,
    sample_identity,
    with_attributes,
)
from faceedittalker.utils.files import COMPLETE_MARKER, atomic_directory, ensure_directory

__all__ = [
    "RENDERED_ATTRIBUTES", "Expression", "Identity", "Pose", "render_face", "rest_expression",
    "sample_identity", "with_attributes", "speech_envelope", "mouth_from_speech", "render_clip",
    "write_synthetic_set", "ensure_synthetic_set", "SET_KINDS", "mouth_opening", "held_out_portrait", "sample_rng",
]  # fmt: skip

SPEECH_DIR = ASSETS_DIR / "speech"

SET_KINDS = ("images", "attributes", "clips")
# Disjoint seed streams: portraits are unseen faces; the judge (metrics/judge.py) trains on faces of its own.
_KIND_CODES = {"images": 1, "attributes": 2, "clips": 3, "portraits": 4, "judge": 5}
MAX_JAW_OPEN = 0.1  # face heights: a wide-open mouth on the loudest syllables


# --- speech -> mouth ---


def speech_envelope(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: float = VIDEO_FPS):
    """Per video frame: the RMS loudness and the spectral centroid (Hz) of a 64 ms window centred on it.

    Returns two float arrays of length ceil(len / samples per frame)."""
    hop = sample_rate / fps
    num_frames = int(np.ceil(len(waveform) / hop))
    window = 1024
    padded = np.pad(np.asarray(waveform, np.float64), (window, window))
    starts = (np.arange(num_frames) * hop + hop / 2 - window / 2 + window).astype(np.int64)
    frames = padded[starts[:, None] + np.arange(window)[None]]
    loudness = np.sqrt((frames**2).mean(axis=1))
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(window), axis=1))
    freqs = np.fft.rfftfreq(window, 1 / sample_rate)
    centroid = (spectrum * freqs).sum(axis=1) / (spectrum.sum(axis=1) + 1e-9)
    return loudness.astype(np.float32), centroid.astype(np.float32)


def mouth_from_speech(loudness: np.ndarray, centroid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jaw opening (face heights) from loudness and lip spread (-1 round .. 1 wide) from the spectrum.

    Opening is proportional to loudness (normalised by its 95th percentile, so it is high by construction
    correlated with the envelope); a 3-tap smoothing stands in for the inertia of the jaw. Bright sounds
    (high centroid, like 'ee' and 's') spread the lips, dark voiced ones (like 'oo') round them."""
    level = np.clip(loudness / (np.percentile(loudness, 95) + 1e-9), 0, 1.2)
    level = np.convolve(np.pad(level, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    jaw_open = MAX_JAW_OPEN * level
    brightness = np.clip((np.log(centroid + 1.0) - np.log(600.0)) / (np.log(4000.0) - np.log(600.0)), 0, 1)
    spread = (2 * brightness - 1) * np.clip(level * 2, 0, 1) * 0.8
    return jaw_open.astype(np.float32), spread.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _speech_sources() -> tuple[np.ndarray, ...]:
    from faceedittalker.data.audio import load_audio

    files = sorted(SPEECH_DIR.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no speech clips in {SPEECH_DIR} (the repository ships them)")
    return tuple(load_audio(f, SAMPLE_RATE) for f in files)


def cut_speech(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, list[dict]]:
    """About `seconds` of speech cut from random stretches of the bundled clips, with short pauses between.

    Returns the waveform and where each piece came from."""
    sources = _speech_sources()
    names = [p.stem for p in sorted(SPEECH_DIR.glob("*.wav"))]
    target = int(seconds * SAMPLE_RATE)
    pieces, provenance, total = [], [], 0
    fade = np.linspace(0, 1, 160, dtype=np.float32)  # 10 ms fades: no clicks at the cuts
    while total < target:
        which = int(rng.integers(len(sources)))
        source = sources[which]
        length = min(len(source), int(rng.uniform(0.8, 2.0) * SAMPLE_RATE), target - total)
        start = int(rng.integers(0, len(source) - length + 1))
        piece = source[start : start + length].copy()
        if len(piece) > 2 * len(fade):
            piece[: len(fade)] *= fade
            piece[-len(fade) :] *= fade[::-1]
        pieces.append(piece)
        provenance.append({"source": names[which], "start_s": start / SAMPLE_RATE, "seconds": length / SAMPLE_RATE})
        total += length
        if total < target and rng.random() < 0.4:
            pause = np.zeros(min(int(rng.uniform(0.1, 0.3) * SAMPLE_RATE), target - total), np.float32)
            pieces.append(pause)
            total += len(pause)
    return np.concatenate(pieces)[:target], provenance


# --- head motion and blinks ---


def _smooth_motion(rng: np.random.Generator, num_frames: int, amplitude: float) -> np.ndarray:
    """A smooth random curve: a sum of three slow sinusoids (0.1-0.6 Hz)."""
    t = np.arange(num_frames) / VIDEO_FPS
    curve = np.zeros(num_frames)
    for _ in range(3):
        curve += np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 2 * np.pi)) / 3
    return amplitude * curve


def blinks(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eyelid closure per frame: a 5-frame blink every 2-5 s."""
    closure = np.zeros(num_frames)
    profile = np.array([0.5, 1.0, 1.0, 0.6, 0.2])
    frame = int(rng.integers(5, 60))
    while frame < num_frames:
        end = min(frame + len(profile), num_frames)
        closure[frame:end] = np.maximum(closure[frame:end], profile[: end - frame])
        frame += int(rng.uniform(2, 5) * VIDEO_FPS)
    return closure


def head_motion(rng: np.random.Generator, num_frames: int, base: Pose) -> list[Pose]:
    """Per-frame poses of a talking head: `base`'s angles pulled towards frontal, plus slow turns, nods and tilts
    (about +-6, 4, 3 degrees); its placement (shift, scale) is kept."""
    yaw = base.yaw * 0.6 + _smooth_motion(rng, num_frames, 6.0)
    pitch = base.pitch * 0.5 + _smooth_motion(rng, num_frames, 4.0)
    roll = base.roll * 0.5 + _smooth_motion(rng, num_frames, 3.0)
    return [Pose(yaw=float(yaw[t]), pitch=float(pitch[t]), roll=float(roll[t]), shift_x=base.shift_x,
                 shift_y=base.shift_y, scale=base.scale) for t in range(num_frames)]  # fmt: skip


def _still_pose(rng: np.random.Generator) -> Pose:
    return Pose(
        yaw=float(rng.uniform(-15, 15)), pitch=float(rng.uniform(-10, 10)), roll=float(rng.uniform(-8, 8)),
        shift_x=float(rng.uniform(-0.03, 0.03)), shift_y=float(rng.uniform(-0.03, 0.03)),
        scale=float(rng.uniform(0.92, 1.08)),
    )  # fmt: skip


def render_clip(
    identity: Identity, waveform: np.ndarray, rng: np.random.Generator, size: int = 64
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A talking clip of `identity` saying `waveform` (16 kHz): frames (T, S, S, 3) uint8, landmarks
    (T, 478, 3) float32 and per-frame truth (jaw opening, spread, loudness, blink, pose) as arrays."""
    loudness, centroid = speech_envelope(waveform)
    jaw_open, spread = mouth_from_speech(loudness, centroid)
    num_frames = len(loudness)
    blink = blinks(rng, num_frames)
    poses = head_motion(rng, num_frames, _still_pose(rng))
    smile = 0.4 * rest_expression(identity).smile
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    landmarks = np.empty((num_frames, 478, 3), np.float32)
    for t in range(num_frames):
        expression = Expression(jaw_open=float(jaw_open[t]), smile=smile, spread=float(spread[t]),
                                blink_right=float(blink[t]), blink_left=float(blink[t]))  # fmt: skip
        frames[t], landmarks[t] = render_face(identity, expression, poses[t], size)
    angles = {axis: np.array([getattr(pose, axis) for pose in poses]) for axis in ("yaw", "pitch", "roll")}
    truth = {"jaw_open": jaw_open, "spread": spread, "loudness": loudness, "blink": blink, **angles}
    return frames, landmarks, truth


# --- sets on disk ---


def sample_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator of sample `index` of a set of `kind` (a key of `_KIND_CODES`) for `seed`."""
    return np.random.default_rng([seed, _KIND_CODES[kind], index])


def _still_sample(seed: int, kind: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray, Identity]:
    rng = sample_rng(seed, kind, index)
    identity = sample_identity(rng)
    expression = rest_expression(identity)
    expression.spread = float(rng.uniform(-0.2, 0.2))
    if rng.random() < 0.05:
        expression.blink_right = expression.blink_left = float(rng.uniform(0.3, 1.0))
    image, landmarks = render_face(identity, expression, _still_pose(rng), size)
    return image, landmarks, identity


def _write_still(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    folder, seed, kind, index, size = args
    image, landmarks, identity = _still_sample(seed, kind, index, size)
    cv2.imwrite(str(folder / f"{index:06d}.png"), image[..., ::-1])
    return landmarks, identity.labels()


def _write_clip(args: tuple) -> None:
    folder, seed, index, size, min_seconds, max_seconds = args
    rng = sample_rng(seed, "clips", index)
    identity = sample_identity(rng, Smiling=False, Mouth_Slightly_Open=False)
    waveform, provenance = cut_speech(rng, float(rng.uniform(min_seconds, max_seconds)))
    frames, landmarks, truth = render_clip(identity, waveform, rng, size)
    clip = folder / f"synthetic_{index:06d}"
    clip.mkdir()
    # The preprocessing CLI's writer and quality: synthetic and real clips are laid out identically.
    # (Imported here: preprocess pulls in MediaPipe, which images-only users of this module do not need.)
    from faceedittalker.data.preprocess import write_video

    write_video(clip / "frames.mp4", iter(frames), VIDEO_FPS, size, crf=14)
    soundfile.write(clip / "audio.wav", waveform, SAMPLE_RATE, subtype="PCM_16")
    np.save(clip / "landmarks.npy", landmarks)
    attributes = {name: int(v) for name, v in zip(CELEBA_ATTRIBUTES, identity.labels(), strict=True)}
    meta = {
        "clip_id": clip.name, "frames": "frames.mp4", "fps": VIDEO_FPS, "size": [size, size],
        "num_frames": len(frames), "source": "synthetic",
        "detection_rate": 1.0, "sample_rate": SAMPLE_RATE, "seed": seed, "index": index,
        "speech": provenance, "attributes": attributes, "identity": _jsonable(identity.to_dict()),
        "truth": {key: np.round(value, 5).tolist() for key, value in truth.items()},
    }  # fmt: skip
    (clip / "meta.json").write_text(json.dumps(meta, indent=1))


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 5)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _run(task: Callable, jobs: list, workers: int, desc: str) -> list:
    if workers <= 1 or len(jobs) < 8:
        return [task(job) for job in tqdm(jobs, desc=desc, unit="sample", leave=False)]
    # Forked workers inherit the loaded template and speech; results come back in job order.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(task, jobs, chunksize=4), total=len(jobs), desc=desc, unit="sample",
                         leave=False))  # fmt: skip


def write_synthetic_set(
    folder: str | os.PathLike,
    kind: str,
    count: int,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 1,
    clip_seconds: tuple[float, float] = (2.0, 4.0),
) -> Path:
    """Generate a set of `kind` ("images", "attributes" or "clips") into `folder`, which must not exist.

    Written into a temporary sibling and renamed when complete (with a `.complete` marker), so a killed run
    leaves no half-written set under `folder`."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists")
    with atomic_directory(folder, replace=False) as tmp:  # FileExistsError if the folder appears meanwhile
        _fill_set(tmp, kind, count, resolution, seed, workers, clip_seconds)
    return folder


def _fill_set(
    folder: Path, kind: str, count: int, resolution: int, seed: int, workers: int, clip_seconds: tuple[float, float]
) -> None:
    """Write a set of `kind` into the empty `folder`, its `.complete` marker last."""
    if kind not in SET_KINDS:
        raise ValueError(f"kind must be one of {SET_KINDS}, got {kind!r}")
    if count < 1 or resolution < 16 or resolution % 2:
        raise ValueError("need count >= 1 and an even resolution >= 16")
    if kind == "clips":
        jobs = [(folder, seed, i, resolution, *clip_seconds) for i in range(count)]
        _run(_write_clip, jobs, workers, "synthetic clips")
    else:
        jobs = [(folder, seed, kind, i, resolution) for i in range(count)]
        results = _run(_write_still, jobs, workers, f"synthetic {kind}")
        np.save(folder / "landmarks.npy", np.stack([landmarks for landmarks, _ in results]))
        if kind == "attributes":
            rows = {f"{i:06d}.png": labels for i, (_, labels) in enumerate(results)}
            write_attribute_file(folder / ATTRIBUTE_FILE_NAME, CELEBA_ATTRIBUTES, rows)
    settings = {"kind": kind, "count": count, "resolution": resolution, "seed": seed,
                "rendered_attributes": list(RENDERED_ATTRIBUTES)}  # fmt: skip
    if kind == "clips":
        settings["clip_seconds"] = list(clip_seconds)
    (folder / COMPLETE_MARKER).write_text(json.dumps(settings, indent=1))


def ensure_synthetic_set(
    root: str | os.PathLike,
    kind: str = "images",
    count: int = 256,
    resolution: int = 64,
    seed: int = 0,
    workers: int = 1,
    clip_seconds: tuple[float, float] = (2.0, 4.0),
) -> Path:
    """The folder of a synthetic set under `root`, generated on first use (idempotent, safe to race:
    `ensure_directory`).

    The folder name records the settings (`<root>/<kind>-<resolution>px-n<count>-seed<seed>`), so asking
    for other settings generates a new set beside the old one instead of reusing a wrong one."""
    name = f"{kind}-{resolution}px-n{count}-seed{seed}"
    if kind == "clips":
        name += f"-{clip_seconds[0]:g}to{clip_seconds[1]:g}s"
    return ensure_directory(
        Path(root).expanduser() / name,
        lambda tmp: _fill_set(tmp, kind, count, resolution, seed, workers, tuple(clip_seconds)),
    )


def held_out_portrait(
    index: int = 0, size: int = 256, seed: int = 0, **attributes: bool
) -> tuple[np.ndarray, Identity]:
    """A frontal synthetic portrait (size, size, 3) uint8 of a person that no training set contains (its own seed
    stream), with a closed mouth and `attributes` forced (e.g. `Eyeglasses=False`), for inference demos and checks."""
    rng = sample_rng(seed, "portraits", index)
    identity = sample_identity(rng, Mouth_Slightly_Open=False, **attributes)
    image, _ = render_face(identity, rest_expression(identity), Pose(), size)
    return image, identity
