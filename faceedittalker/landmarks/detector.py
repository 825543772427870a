"""MediaPipe face landmarks: the Face Landmarker (Tasks API) on the vendored `assets/face_landmarker.task`: 478
points (468 mesh + 10 iris), the 4x4 facial transformation matrix and 52 blendshapes per face.

Coordinates follow MediaPipe: `points[:, 0]` and `points[:, 1]` are x and y divided by the image width
and height; `points[:, 2]` is the depth relative to the head centre in image widths, smaller = closer.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from faceedittalker.errors import InputError
from faceedittalker.landmarks.pose import DEFAULT_MODEL_PATH
from faceedittalker.landmarks.render import image_hw


@dataclass
class FaceLandmarks:
    """One detected face."""

    points: np.ndarray  # (478, 3) float32, image-normalised (see module docstring)
    matrix: np.ndarray | None = None  # (4, 4) float32, canonical face model -> camera frame
    blendshapes: dict[str, float] | None = None  # 52 ARKit-style coefficients in [0, 1]

    def pixels(self, image_size: int | tuple[int, int]) -> np.ndarray:
        """The (478, 2) x, y in pixels of an image of `image_size` (int or (height, width))."""
        height, width = image_hw(image_size)
        return self.points[:, :2] * np.array([width, height], dtype=np.float32)


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous uint8 (H, W, 3) array, or raise InputError naming what is wrong."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if image.ndim == 2:
        raise InputError("expected an RGB image, got a greyscale one (convert it to RGB first)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an RGB image of shape (H, W, 3), got shape {tuple(image.shape)}")
    return np.ascontiguousarray(image)


class FaceLandmarker:
    """MediaPipe Face Landmarker on the vendored model.

    `mode="image"` treats every image independently; `mode="video"` tracks the face from frame to frame
    (faster and steadier, timestamps must increase). Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        model_path: str | os.PathLike = DEFAULT_MODEL_PATH,
        mode: str = "image",
        num_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        blendshapes: bool = True,
        matrices: bool = True,
    ):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise InputError(
                f"face landmarker model not found: {model_path} (it ships with the repository as "
                "assets/face_landmarker.task; Google publishes it as face_landmarker.task on "
                "storage.googleapis.com/mediapipe-models)"
            )
        running_modes = {"image": vision.RunningMode.IMAGE, "video": vision.RunningMode.VIDEO}
        if mode not in running_modes:
            raise InputError(f"landmarker mode must be 'image' or 'video', got {mode!r}")
        self.mode = mode
        options = vision.FaceLandmarkerOptions(
            # Reading the bytes ourselves keeps non-ASCII and relative paths working on every platform.
            base_options=BaseOptions(model_asset_buffer=model_path.read_bytes()),
            running_mode=running_modes[mode],
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            min_tracking_confidence=min_tracking_confidence,
            output_face_blendshapes=blendshapes,
            output_facial_transformation_matrixes=matrices,
        )
        with _native_stderr_silenced():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_timestamp_ms = -1

    def detect_all(self, image: np.ndarray, timestamp_ms: int | None = None) -> list[FaceLandmarks]:
        """All faces found (up to `num_faces`), most confident first. Video mode needs increasing timestamps;
        without one, frames are taken to be 40 ms (25 fps) apart."""
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=check_rgb_image(image))
        if self.mode == "image":
            result = self._landmarker.detect(mp_image)
        else:
            if timestamp_ms is None:
                timestamp_ms = self._last_timestamp_ms + 40
            timestamp_ms = int(timestamp_ms)
            if timestamp_ms <= self._last_timestamp_ms:
                last = self._last_timestamp_ms
                raise ValueError(f"video timestamps must increase: {timestamp_ms} ms after {last} ms")
            self._last_timestamp_ms = timestamp_ms
            result = self._landmarker.detect_for_video(mp_image, timestamp_ms)
        faces = []
        for index, landmarks in enumerate(result.face_landmarks):
            points = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float32)
            matrix = None
            if result.facial_transformation_matrixes:
                matrix = np.asarray(result.facial_transformation_matrixes[index], dtype=np.float32)
            blendshapes = None
            if result.face_blendshapes:
                blendshapes = {c.category_name: float(c.score) for c in result.face_blendshapes[index]}
            faces.append(FaceLandmarks(points, matrix, blendshapes))
        return faces

    def detect(self, image: np.ndarray) -> FaceLandmarks | None:
        """The face in an RGB uint8 image, or None when there is none (video mode: next frame at +40 ms)."""
        faces = self.detect_all(image)
        return faces[0] if faces else None

    def detect_video_frame(self, image: np.ndarray, timestamp_ms: int) -> FaceLandmarks | None:
        """Video mode: the tracked face in the frame shown at `timestamp_ms`, or None."""
        if self.mode != "video":
            raise ValueError("detect_video_frame needs FaceLandmarker(mode='video')")
        faces = self.detect_all(image, timestamp_ms)
        return faces[0] if faces else None

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _native_stderr_silenced():
    """Mute stderr at the file-descriptor level: MediaPipe's C++ graph prints several warnings and TFLite
    notes each time a landmarker is created, which would bury a command-line tool's own output."""
    if os.environ.get("FACEEDITTALKER_MEDIAPIPE_LOGS"):  # set it to see them
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
