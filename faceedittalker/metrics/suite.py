"""The evaluation suite behind `scripts/evaluate.py`: find and pair videos, align and crop both sides the same way,
compute the paper's metrics per video and over the set, and write the table (Markdown, CSV, JSON).

Conventions (the same for the generated and the reference side of a pair):
- Videos: `.mp4` files or clip folders (`frames.mp4` or `frames/`, with `audio.wav`), paired by name (file stem or
  folder name). A single `.mp4` or clip folder is a set of one.
- Time: both at 25 fps (SyncNet's rate; another rate is an error), frame i against frame i, cut to the shorter.
- Space: a generated video of another size is resized (area) to the reference's size. `crop="face"`: one fixed
  square box per pair, from the reference's MediaPipe face mesh (median box over frames, side `crop_scale` x its
  larger extent, centred, shifted inside the frame), cut from both videos and resized to `crop_size` (224, as EAT's
  evaluation); a reference without a detected face falls back to full frames. `crop="full"`: whole frames.
- FID, SSIM, PSNR, CPBD, M-LMD / F-LMD and TL-ID / TG-ID use these evaluated frames (LMD in their pixels); SSIM /
  PSNR / LMD / identity compare the pair, CPBD scores the generated frames only, FID pools all frames of each side.
- Lip sync uses the generated video's full frames (SyncNet's own face crop, `metrics.lipsync`) and its audio: the
  `.mp4`'s audio stream or the clip's `audio.wav`; the reference's audio when the generated video has none.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from faceedittalker.data.clips import is_clip_folder, read_frames
from faceedittalker.errors import InputError

# The paper's column order: Table II, then Table III.
METRICS = ("fid", "ssim", "psnr", "cpbd", "lse_d", "lse_c", "av_offset", "m_lmd", "f_lmd", "tl_id", "tg_id")
COLUMN_TITLES = {"fid": "FID", "ssim": "SSIM", "psnr": "PSNR", "cpbd": "CPBD", "lse_d": "Min Dist (LSE-D)",
                 "lse_c": "AVConf (LSE-C)", "av_offset": "AVOffset", "m_lmd": "M-LMD", "f_lmd": "F-LMD",
                 "tl_id": "TL-ID", "tg_id": "TG-ID"}  # fmt: skip
TABLE_V_METRICS = ("lse_d", "lse_c", "av_offset", "m_lmd", "f_lmd")
SYNC_METRICS = ("lse_d", "lse_c", "av_offset")
IDENTITY_METRICS = ("tl_id", "tg_id")
FPS = 25


@dataclass
class Video:
    name: str
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    audio: np.ndarray | None  # 16 kHz mono float32, or None
    fps: float


@dataclass
class VideoSource:
    """Where one video lives; read lazily, one pair at a time."""

    name: str
    path: Path

    def read(self) -> Video:
        from faceedittalker.data.audio import load_audio

        if self.path.is_dir():
            frames = read_frames(self.path)
            fps = _mp4_fps(self.path / "frames.mp4") if (self.path / "frames.mp4").is_file() else FPS
            audio = load_audio(self.path / "audio.wav") if (self.path / "audio.wav").is_file() else None
            return Video(self.name, frames, audio, fps)
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                fps = float(stream.average_rate or FPS)
                frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
                has_audio = bool(container.streams.audio)
        except (av.FFmpegError, IndexError, ValueError) as err:
            raise InputError(f"cannot read video {self.path}: {err}") from err
        return Video(self.name, frames, load_audio(self.path) if has_audio else None, fps)


def _mp4_fps(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate or FPS)


def find_videos(root: str | os.PathLike, what: str) -> dict[str, VideoSource]:
    """name -> source for an `.mp4`, a clip folder, or a folder of them (`what`: "generated" / "reference")."""
    root = Path(root).expanduser()
    if root.is_file():
        if root.suffix.lower() != ".mp4":
            raise InputError(f"{what} must be an .mp4 file or a folder, got {root}")
        return {root.stem: VideoSource(root.stem, root)}
    if not root.is_dir():
        raise InputError(f"{what} not found: {root}")
    if is_clip_folder(root) or (root / "frames.mp4").is_file():
        return {root.name: VideoSource(root.name, root)}
    found = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix.lower() == ".mp4":
            found[path.stem] = VideoSource(path.stem, path)
        elif path.is_dir() and ((path / "frames.mp4").is_file() or (path / "frames").is_dir()):
            found[path.name] = VideoSource(path.name, path)
    if not found:
        raise InputError(f"no videos (.mp4 files or clip folders) in {what} folder {root}")
    return found


Pair = tuple[str, VideoSource, VideoSource]


def pair_videos(generated: dict[str, VideoSource], reference: dict[str, VideoSource]) -> list[Pair]:
    """(name, generated, reference) for the names on both sides; none in common is an `InputError`. A single video on
    each side pairs whatever the names."""
    if len(generated) == 1 and len(reference) == 1:
        (name, g), (_, r) = next(iter(generated.items())), next(iter(reference.items()))
        return [(name, g, r)]
    names = sorted(set(generated) & set(reference))
    if not names:
        raise InputError(f"no video names in common: generated has {sorted(generated)[:5]}, "
                         f"reference has {sorted(reference)[:5]}")  # fmt: skip
    return [(name, generated[name], reference[name]) for name in names]


def face_box(points: np.ndarray, height: int, width: int, scale: float) -> tuple[int, int, int] | None:
    """(x0, y0, side) of the square crop around the median landmark box of (F, N, 2) pixels, inside the frame."""
    valid = ~np.isnan(points).any(axis=(1, 2))
    if not valid.any():
        return None
    low, high = np.median(points[valid].min(axis=1), axis=0), np.median(points[valid].max(axis=1), axis=0)
    side = int(round(min(scale * float((high - low).max()), height, width)))
    centre = (low + high) / 2
    x0 = int(np.clip(round(centre[0] - side / 2), 0, width - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, height - side))
    return x0, y0, side


def crop_frames(frames: np.ndarray, box: tuple[int, int, int] | None, size: int) -> np.ndarray:
    if box is None:
        return frames
    x0, y0, side = box
    interpolation = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(np.ascontiguousarray(f[y0:y0 + side, x0:x0 + side]), (size, size),
                                interpolation=interpolation) for f in frames])  # fmt: skip


def align_pair(generated: Video, reference: Video) -> tuple[np.ndarray, np.ndarray]:
    """Both videos' frames, cut to the shorter one, the generated resized to the reference's size."""
    for video in (generated, reference):
        if abs(video.fps - FPS) > 0.01:
            raise InputError(f"{video.name}: {video.fps:g} fps; the metrics (SyncNet) need {FPS} fps videos")
    count = min(len(generated.frames), len(reference.frames))
    gen, ref = generated.frames[:count], reference.frames[:count]
    if gen.shape[1:3] != ref.shape[1:3]:
        height, width = ref.shape[1:3]
        gen = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in gen])
    return gen, ref


def selected_metrics(names: list[str]) -> list[str]:
    """The requested metrics in the paper's order, whatever the request's; an unknown name is an `InputError`."""
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return [m for m in METRICS if m in names]


@dataclass
class Evaluators:
    """What the selected metrics need, built once: skipped metrics carry the reason (printed once each)."""

    metrics: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fid: object | None = None
    syncnet: object | None = None
    identity: Callable | None = None
    identity_name: str | None = None

    @classmethod
    def build(cls, metrics: list[str], weights_dir: str | os.PathLike, identity_embedder: str = "auto",
              arcface_path: str | os.PathLike | None = None, device: str = "cpu") -> Evaluators:
        ordered = selected_metrics(metrics)
        suite = cls(ordered)
        if "fid" in ordered:
            from faceedittalker.metrics.fid import build_inception_fid

            suite.fid, reason = build_inception_fid(weights_dir)
            if reason:
                suite.skipped["fid"] = reason
        if any(m in ordered for m in SYNC_METRICS):
            from faceedittalker.metrics.lipsync import SYNCNET_WEIGHTS_FILE, load_syncnet, missing_syncnet_reason

            reason = missing_syncnet_reason(weights_dir)
            if reason:
                suite.skipped.update(dict.fromkeys([m for m in SYNC_METRICS if m in ordered], reason))
            else:
                suite.syncnet = load_syncnet(Path(weights_dir).expanduser() / SYNCNET_WEIGHTS_FILE).to(device)
        if any(m in ordered for m in IDENTITY_METRICS):
            suite._build_identity(identity_embedder, arcface_path or Path(weights_dir) / "arcface.onnx")
        return suite

    def _build_identity(self, embedder: str, arcface_path: str | os.PathLike) -> None:
        from faceedittalker.metrics.identity import ArcFaceEmbedder, DlibEmbedder, missing_arcface_reason

        if embedder not in ("auto", "arcface", "dlib"):
            raise InputError(f"identity_embedder must be auto, arcface or dlib, got {embedder!r}")
        reason = missing_arcface_reason(arcface_path)
        if embedder == "arcface" and reason:
            self.skipped.update(dict.fromkeys([m for m in IDENTITY_METRICS if m in self.metrics], reason))
            return
        if embedder == "dlib" or reason:  # auto without ArcFace weights: dlib's descriptor, said once
            self.identity, self.identity_name = DlibEmbedder(), "dlib"
            if embedder == "auto":
                self.notes.append(f"TL-ID/TG-ID use dlib's 128-d descriptor: no ArcFace model at {arcface_path}")
        else:
            self.identity, self.identity_name = ArcFaceEmbedder(arcface_path), "arcface"

    @property
    def active(self) -> list[str]:
        return [m for m in self.metrics if m not in self.skipped]


def evaluate_pair(suite: Evaluators, generated: Video, reference: Video, crop: str = "face", crop_size: int = 224,
                  crop_scale: float = 1.4, lmd_landmarks: str = "mediapipe") -> tuple[dict[str, float], np.ndarray,
                                                                                     np.ndarray]:
    """The per-video metrics of one pair, and the evaluated frames of both sides (for FID). `lmd_landmarks`:
    "mediapipe" (this project's 478 points) or "dlib68" (the paper's 68 points) for M-LMD / F-LMD."""
    from faceedittalker.landmarks.detector import FaceLandmarker
    from faceedittalker.metrics import lmd

    if crop not in ("face", "full"):
        raise InputError(f"crop must be 'face' or 'full', got {crop!r}")
    if lmd_landmarks not in ("mediapipe", "dlib68"):
        raise InputError(f"lmd_landmarks must be 'mediapipe' or 'dlib68', got {lmd_landmarks!r}")
    detect_video_landmarks = lmd.detect_video_landmarks  # shared by the face box, the sync crop and LMD
    active = suite.active
    gen_full, ref_full = align_pair(generated, reference)
    row: dict[str, float] = {"frames": len(gen_full)}
    with FaceLandmarker(mode="image", blendshapes=False, matrices=False) as landmarker:
        ref_points = detect_video_landmarks(ref_full, landmarker) if crop == "face" else None
        box = face_box(ref_points, *ref_full.shape[1:3], crop_scale) if crop == "face" else None
        gen, ref = crop_frames(gen_full, box, crop_size), crop_frames(ref_full, box, crop_size)
        if "ssim" in active or "psnr" in active:
            from faceedittalker.metrics.video import video_psnr, video_ssim

            if "ssim" in active:
                row["ssim"] = video_ssim(gen, ref)
            if "psnr" in active:
                row["psnr"] = video_psnr(gen, ref)
        if "cpbd" in active:
            from faceedittalker.metrics.cpbd import video_cpbd

            row["cpbd"] = video_cpbd(gen)
        if any(m in active for m in SYNC_METRICS):
            row.update(_sync_row(suite, gen_full, generated.audio if generated.audio is not None else reference.audio,
                                 landmarker))
        if "m_lmd" in active or "f_lmd" in active:
            if lmd_landmarks == "dlib68":
                gen_points, ref_points = lmd.detect_dlib68(gen), lmd.detect_dlib68(ref)
                mouth, face = lmd.DLIB_MOUTH_POINTS, lmd.DLIB_FACE_POINTS
            else:
                gen_points = detect_video_landmarks(gen, landmarker)
                ref_points = detect_video_landmarks(ref, landmarker)
                mouth, face = lmd.MOUTH_POINTS, lmd.FACE_POINTS
            if "m_lmd" in active:
                row["m_lmd"] = lmd.landmark_distance(gen_points, ref_points, mouth)[0]
            if "f_lmd" in active:
                row["f_lmd"] = lmd.landmark_distance(gen_points, ref_points, face)[0]
    if suite.identity is not None:
        from faceedittalker.metrics.identity import temporal_identity

        row.update(temporal_identity(suite.identity(gen), suite.identity(ref)))
    return {k: v for k, v in row.items() if k == "frames" or k in active}, gen, ref


def _sync_row(suite: Evaluators, frames: np.ndarray, audio: np.ndarray | None, landmarker) -> dict[str, float]:
    from faceedittalker.metrics.lipsync import face_boxes, sync_embeddings, sync_scores, syncnet_crops
    from faceedittalker.metrics.lmd import detect_video_landmarks

    if audio is None:
        return {m: math.nan for m in SYNC_METRICS}
    points = detect_video_landmarks(frames, landmarker)
    if np.isnan(points).all():
        return {m: math.nan for m in SYNC_METRICS}
    crops = syncnet_crops(frames, face_boxes(points))
    lips, speech = sync_embeddings(suite.syncnet, crops, audio)
    return sync_scores(lips, speech)


def mean_row(rows: list[dict[str, float]], metrics: list[str]) -> dict[str, float]:
    """The mean of each metric over the videos (NaN-skipping; infinite PSNRs give inf)."""
    mean: dict[str, float] = {"frames": int(sum(r["frames"] for r in rows))}
    for metric in metrics:
        values = [r[metric] for r in rows if metric in r and not math.isnan(r[metric])]
        mean[metric] = float(np.mean(values)) if values else math.nan
    return mean


def _format(value: float | int | None, metric: str) -> str:
    if value is None or math.isnan(float(value)):
        return "-"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if metric in ("frames", "av_offset"):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return f"{value:.4f}"


def write_table(rows: dict[str, dict[str, float]], metrics: list[str], output: str | os.PathLike,
                extra: dict | None = None, first_column: str = "video") -> dict[str, Path]:
    """`metrics.md`, `metrics.csv` and `metrics.json` in `output`: one row per entry of `rows`, columns in the
    paper's order. Written to temporary names first, then renamed, so no half-written table is left."""
    output = Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    header = [first_column, "frames", *[COLUMN_TITLES[m] for m in metrics]]
    table = [[name, *[_format(row.get(m), m) for m in ("frames", *metrics)]] for name, row in rows.items()]
    markdown = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *["| " + " | ".join(line) + " |" for line in table]]) + "\n"  # fmt: skip
    paths = {"md": output / "metrics.md", "csv": output / "metrics.csv", "json": output / "metrics.json"}
    temporary = {key: path.with_name(f".{path.name}.partial") for key, path in paths.items()}
    temporary["md"].write_text(markdown)
    with open(temporary["csv"], "w", newline="") as handle:
        csv.writer(handle).writerows([header, *table])
    json_rows = {name: {k: (None if isinstance(v, float) and math.isnan(v) else
                            ("inf" if isinstance(v, float) and math.isinf(v) else v)) for k, v in row.items()}
                 for name, row in rows.items()}  # fmt: skip
    temporary["json"].write_text(json.dumps({"columns": metrics, "rows": json_rows, **(extra or {})}, indent=2))
    for key, path in paths.items():
        os.replace(temporary[key], path)
    return paths
