"""Temporal identity consistency: TL-ID (local) and TG-ID (global), as STIT (Tzaban et al., 2022) defines them.

Every frame of the edited video and of its source gets an identity embedding; S[i, j] is the cosine similarity of
frames i and j. The edit should keep the source's consistency, so the ratio R = S_edited / S_source is scored:
TL-ID = the mean of R over adjacent frames (i, i + 1), TG-ID = the mean of R over all pairs i < j. 1 = as
consistent as the source; below 1 = the identity drifts more than in the source. (STIT's code was never released;
this follows the paper's definition and the usual third-party implementation.)

The embedder is pluggable (`IdentityEmbedder`: uint8 RGB frames (F, H, W, 3) -> (F, D)):
- `ArcFaceEmbedder`: an ArcFace ONNX model from a local path (e.g. insightface's `w600k_r50.onnx`; not on PyPI),
  run with onnxruntime on 112 x 112 crops aligned to the standard ArcFace 5-point template with this project's
  MediaPipe landmarks; pixels (x - 127.5) / 127.5, RGB, NCHW. This is what STIT-style numbers use.
- `DlibEmbedder`: dlib's 128-d face descriptor (ResNet, `face-recognition-models` on PyPI) on dlib's HOG-detected,
  68-point-aligned face chip (150 px). Works offline; its cosine similarities of different people are high (~0.9),
  so it separates less than ArcFace and its numbers are not comparable with ArcFace-based ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

ARCFACE_WEIGHTS_FILE = "arcface.onnx"
ARCFACE_SIZE = 112
# insightface's reference 5 points (eye centres, nose tip, mouth corners; image left to right) in a 112 px crop.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)  # fmt: skip
# The same five points from MediaPipe's mesh: iris centres, nose tip, mouth corners (image left to right).
MEDIAPIPE_FIVE_POINTS = (468, 473, 1, 61, 291)


class IdentityEmbedder(Protocol):
    name: str

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(F, H, W, 3) uint8 RGB -> (F, D) identity embeddings (NaN rows where no face is found)."""
        ...


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """(F, F) cosine similarities of (F, D) embeddings."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return unit @ unit.T


def temporal_identity(edited: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """TL-ID and TG-ID of the (F, D) embeddings of an edited video and of its source (same frames). Frames whose
    embedding is missing (NaN) on either side are dropped first."""
    if edited.shape != source.shape:
        raise ValueError(f"embeddings differ in shape: {edited.shape} vs {source.shape}")
    keep = ~(np.isnan(edited).any(axis=1) | np.isnan(source).any(axis=1))
    edited, source = edited[keep], source[keep]
    if len(edited) < 2:
        return {"tl_id": float("nan"), "tg_id": float("nan")}
    ratio = similarity_matrix(edited) / similarity_matrix(source)
    upper = np.triu_indices(len(ratio), k=1)
    return {"tl_id": float(np.diagonal(ratio, offset=1).mean()), "tg_id": float(ratio[upper].mean())}


def align_five_points(frame: np.ndarray, points: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The (size, size, 3) crop of `frame` that maps its five points (5, 2) pixels onto the ArcFace template."""
    transform = SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE * size / ARCFACE_SIZE)
    return cv2.warpAffine(frame, transform.params[:2], (size, size), borderValue=0)


def missing_arcface_reason(path: str | os.PathLike) -> str | None:
    path = Path(path).expanduser()
    if path.is_file():
        return None
    return (f"ArcFace identity skipped: put an ArcFace ONNX model (e.g. insightface buffalo_l's w600k_r50.onnx, "
            f"input 1x3x112x112) at {path}")  # fmt: skip


class ArcFaceEmbedder:
    """ArcFace (ONNX, onnxruntime on CPU) on 5-point-aligned 112 px crops; faces found with MediaPipe."""

    name = "arcface"

    def __init__(self, model_path: str | os.PathLike, batch_size: int = 16):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def crops(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F, 112, 112, 3) aligned crops and an (F,) mask of the frames with a face."""
        from faceedittalker.metrics.lmd import detect_video_landmarks

        points = detect_video_landmarks(frames)
        found = ~np.isnan(points).any(axis=(1, 2))
        crops = np.zeros((len(frames), ARCFACE_SIZE, ARCFACE_SIZE, 3), dtype=np.uint8)
        for index in np.flatnonzero(found):
            crops[index] = align_five_points(frames[index], points[index, list(MEDIAPIPE_FIVE_POINTS)])
        return crops, found

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        crops, found = self.crops(frames)
        batch = ((crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)  # (F, 3, 112, 112)
        outputs = [self.session.run(None, {self.input_name: batch[s:s + self.batch_size]})[0]
                   for s in range(0, len(batch), self.batch_size)]  # fmt: skip
        embeddings = np.concatenate(outputs).astype(np.float64)
        embeddings[~found] = np.nan
        return embeddings


class DlibEmbedder:
    """dlib's 128-d face descriptor on the largest HOG-detected face of each frame (68-point aligned chip)."""

    name = "dlib"

    def __init__(self):
        import dlib
        import face_recognition_models

        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        embeddings = np.full((len(frames), 128), np.nan)
        for index, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            faces = self.detector(frame, 0) or self.detector(frame, 1)  # upsample only for small faces
            if not faces:
                continue
            face = max(faces, key=lambda box: box.area())
            shape = self.shape_predictor(frame, face)
            embeddings[index] = np.asarray(self.encoder.compute_face_descriptor(frame, shape))
        return embeddings
