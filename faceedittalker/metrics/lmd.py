"""Landmark distances between a generated and a ground-truth video: M-LMD (mouth) and F-LMD (face).

The paper's numbers follow EAT's `test_lmd.py`: dlib's 68 points per frame (mouth = points 48-67, 20 points; face
= all 68: jaw 17, brows 10, nose 9, eyes 12, mouth 20), each point set centred on its own mean in every frame (so a
head translation costs nothing), the mean Euclidean distance between corresponding points, in pixels of the
evaluated frames, averaged over frames.

Ours computes the same quantity with this project's landmark module (MediaPipe Face Landmarker,
`faceedittalker.landmarks`): M-LMD over `LIP_POINTS` (40 points on the outer and inner lip contours, vs dlib's 12
outer + 8 inner), F-LMD over all 478 points (468 mesh points covering the whole face surface + 10 iris points, vs
dlib's 68 contour points). Units are pixels of the frames compared (x and y only). The denser mesh samples the
cheeks and forehead, which move little, so our F-LMD is not numerically comparable with dlib-based values (expect it
lower for the same video); M-LMD is closer in meaning (both sample the lip contours) but not identical.
Frames where either video has no detected face are left out (their count is returned).

For numbers on the paper's footing, `detect_dlib68` gives dlib's 68 points (HOG face detector + the
`shape_predictor_68_face_landmarks` model from `face-recognition-models`), with `DLIB_MOUTH_POINTS` (48-67) and
`DLIB_FACE_POINTS` (0-67); `scripts/evaluate.py lmd_landmarks=dlib68` uses them.
"""

from __future__ import annotations

import numpy as np

from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.topology import LIP_POINTS, NUM_LANDMARKS

MOUTH_POINTS = LIP_POINTS
FACE_POINTS = list(range(NUM_LANDMARKS))
DLIB_MOUTH_POINTS = list(range(48, 68))
DLIB_FACE_POINTS = list(range(68))


def detect_video_landmarks(frames: np.ndarray, landmarker: FaceLandmarker | None = None) -> np.ndarray:
    """(F, 478, 2) landmark x, y in pixels of the (F, H, W, 3) uint8 frames; NaN rows where no face is found.
    Each frame is detected independently (image mode), the same way for both videos of a pair."""
    own = landmarker is None
    landmarker = landmarker or FaceLandmarker(mode="image", blendshapes=False, matrices=False)
    try:
        points = np.full((len(frames), NUM_LANDMARKS, 2), np.nan, dtype=np.float64)
        for index, frame in enumerate(frames):
            face = landmarker.detect(frame)
            if face is not None:
                points[index] = face.pixels(frame.shape[:2])
        return points
    finally:
        if own:
            landmarker.close()


def detect_dlib68(frames: np.ndarray) -> np.ndarray:
    """(F, 68, 2) dlib landmark pixels of the largest HOG-detected face per frame; NaN rows where none is found."""
    import dlib
    import face_recognition_models

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    points = np.full((len(frames), 68, 2), np.nan)
    for index, frame in enumerate(frames):
        frame = np.ascontiguousarray(frame)
        faces = detector(frame, 0) or detector(frame, 1)  # upsample only for small faces
        if faces:
            shape = predictor(frame, max(faces, key=lambda box: box.area()))
            points[index] = [(p.x, p.y) for p in shape.parts()]
    return points


def landmark_distance(generated: np.ndarray, reference: np.ndarray, points: list[int]) -> tuple[float, int]:
    """Mean over frames of the mean distance (pixels) between the mean-centred `points` of two (F, N, 2) landmark
    sequences; frames with NaN on either side are skipped. Returns (distance, frames used); NaN if none is."""
    if generated.shape != reference.shape:
        raise ValueError(f"landmark sequences differ in shape: {generated.shape} vs {reference.shape}")
    generated, reference = generated[:, points], reference[:, points]  # (F, K, 2)
    valid = ~(np.isnan(generated).any(axis=(1, 2)) | np.isnan(reference).any(axis=(1, 2)))
    if not valid.any():
        return float("nan"), 0
    generated, reference = generated[valid], reference[valid]
    generated = generated - generated.mean(axis=1, keepdims=True)
    reference = reference - reference.mean(axis=1, keepdims=True)
    return float(np.linalg.norm(generated - reference, axis=-1).mean()), int(valid.sum())


def mouth_lmd(generated: np.ndarray, reference: np.ndarray) -> float:
    """M-LMD (pixels) of two (F, 478, 2) landmark sequences."""
    return landmark_distance(generated, reference, MOUTH_POINTS)[0]


def face_lmd(generated: np.ndarray, reference: np.ndarray) -> float:
    """F-LMD (pixels) of two (F, 478, 2) landmark sequences."""
    return landmark_distance(generated, reference, FACE_POINTS)[0]
