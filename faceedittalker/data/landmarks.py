"""MediaPipe face landmarks: detection, pose normalisation and the landmark image L.

Detection runs Google's Face Landmarker (Tasks API) on the vendored `assets/face_landmarker.task`: 478 points
(468 mesh + 10 iris), the 4x4 facial transformation matrix and 52 blendshapes per face.

Coordinates follow MediaPipe: `points[:, 0]` and `points[:, 1]` are x and y divided by the image width
and height; `points[:, 2]` is the depth relative to the head centre in image widths, smaller = closer.

Pose model (`normalise_pose` / `apply_pose`). MediaPipe's matrix maps its canonical face model (cm, y up, the
face looking along +z) into an OpenGL camera frame (camera at the origin looking down -z), seen through a
pinhole camera with a 63 degree vertical field of view centred on the image. We unproject every landmark with
that camera (the head's distance from the matrix translation plus the landmark's own depth offset) and apply
the inverse matrix: the face in the canonical, pose-free frame, in cm, close to `canonical_face_mesh()` for a
neutral face. `apply_pose` is the exact inverse for any matrix, so a canonical face (e.g. one animated by the
landmark predictor) can be drawn with any pose, as AniPortrait does. `estimate_pose` fits a matrix by
Procrustes to the canonical mesh when none is at hand.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from faceedittalker import ASSETS_DIR
from faceedittalker.errors import InputError

DEFAULT_MODEL_PATH = ASSETS_DIR / "face_landmarker.task"
NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468  # the first 468 points are the face mesh; 468..477 are the two irises
# MediaPipe's face-geometry camera (perspective_camera in the Face Landmarker graph).
CAMERA_VERTICAL_FOV_DEG = 63.0


@dataclass
class FaceLandmarks:
    """One detected face."""

    points: np.ndarray  # (478, 3) float32, image-normalised (see module docstring)
    matrix: np.ndarray | None = None  # (4, 4) float32, canonical face model -> camera frame
    blendshapes: dict[str, float] | None = None  # 52 ARKit-style coefficients in [0, 1]

    def pixels(self, image_size: int | tuple[int, int]) -> np.ndarray:
        """The (478, 2) x, y in pixels of an image of `image_size` (int or (height, width))."""
        height, width = _hw(image_size)
        return self.points[:, :2] * np.array([width, height], dtype=np.float32)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


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


# --- topology and rendering ---


def _pairs(connections: Iterable) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in connections]


_MP_CONNECTIONS = vision.FaceLandmarksConnections
# Left/right are the subject's, as in MediaPipe: "left_eye" appears on the right of a frontal image.
CONNECTIONS: dict[str, list[tuple[int, int]]] = {
    "face_oval": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_FACE_OVAL),
    "left_eye": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_LEFT_EYE),
    "right_eye": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_RIGHT_EYE),
    "left_eyebrow": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_LEFT_EYEBROW),
    "right_eyebrow": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_RIGHT_EYEBROW),
    "lips": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_LIPS),
    "nose": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_NOSE),
    "left_iris": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_LEFT_IRIS),
    "right_iris": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_RIGHT_IRIS),
    "tesselation": _pairs(_MP_CONNECTIONS.FACE_LANDMARKS_TESSELATION),
}

# The lip contours split into four parts, so an open mouth reads clearly in L (AniPortrait colours its lips by
# segment too). Which MediaPipe lip points lie on which contour; the mouth corners belong to both halves.
_LIP_CONTOUR_POINTS = {
    "lips_upper_outer": {61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291},
    "lips_lower_outer": {61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291},
    "lips_upper_inner": {78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308},
    "lips_lower_inner": {78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308},
}
LIP_CONTOURS: dict[str, list[tuple[int, int]]] = {
    name: [(a, b) for a, b in CONNECTIONS["lips"] if a in members and b in members]
    for name, members in _LIP_CONTOUR_POINTS.items()
}

# RGB colours of the landmark image L: every part its own colour, the subject's left and right differ.
RENDER_COLOURS: dict[str, tuple[int, int, int]] = {
    "face_oval": (230, 230, 230),
    "left_eyebrow": (255, 170, 0),
    "right_eyebrow": (0, 170, 255),
    "left_eye": (0, 255, 0),
    "right_eye": (255, 0, 255),
    "lips_upper_outer": (255, 0, 0),
    "lips_lower_outer": (255, 255, 0),
    "lips_upper_inner": (0, 255, 255),
    "lips_lower_inner": (0, 0, 255),
    "left_iris": (120, 255, 120),
    "right_iris": (255, 120, 255),
}


def render_landmarks(
    points: np.ndarray,
    size: int | tuple[int, int],
    thickness: int = 2,
    draw_iris: bool = False,
) -> np.ndarray:
    """Draw the landmark image L: contours of one face on a black canvas, an (H, W, 3) uint8 RGB array.

    `points` are image-normalised (478, 2) or (478, 3) (z is ignored); `size` is an int or (height, width).
    Face oval, eyebrows, eyes and four lip contours in the colours of `RENDER_COLOURS`, no anti-aliasing, so
    the same points always give the same pixels. Training and inference both draw with this function.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < NUM_MESH_LANDMARKS or points.shape[1] not in (2, 3):
        raise InputError(f"expected landmarks of shape (478, 2|3), got {tuple(points.shape)}")
    if draw_iris and points.shape[0] < NUM_LANDMARKS:
        raise InputError("drawing the irises needs all 478 landmarks")
    height, width = _hw(size)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    pixels = np.round(points[:, :2] * (width, height)).astype(np.int64)
    # Keep far-off points (a face leaving the frame) inside cv2's coordinate range.
    pixels = np.clip(pixels, -4 * max(width, height), 5 * max(width, height))
    parts = ["face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", *LIP_CONTOURS]
    if draw_iris:
        parts += ["left_iris", "right_iris"]
    for part in parts:
        connections = LIP_CONTOURS[part] if part in LIP_CONTOURS else CONNECTIONS[part]
        colour = RENDER_COLOURS[part]
        for start, end in connections:
            start_xy, end_xy = tuple(map(int, pixels[start])), tuple(map(int, pixels[end]))
            cv2.line(canvas, start_xy, end_xy, colour, thickness, cv2.LINE_8)
    return canvas


# --- pose ---


@functools.lru_cache(maxsize=1)
def canonical_face_mesh(model_path: str | os.PathLike = DEFAULT_MODEL_PATH) -> np.ndarray:
    """MediaPipe's canonical face model: (468, 3) float32 in cm, y up, the face looking along +z.

    Read from the geometry metadata inside the model bundle (a `Mesh3d` proto whose vertex buffer holds
    x, y, z, u, v per vertex); mediapipe does not ship that proto's schema, so fields are read by number.
    """
    from google.protobuf import empty_pb2
    from google.protobuf.unknown_fields import UnknownFieldSet

    def fields(blob: bytes, number: int) -> list:
        message = empty_pb2.Empty()
        message.ParseFromString(blob)
        return [field.data for field in UnknownFieldSet(message) if field.field_number == number]

    with zipfile.ZipFile(model_path) as bundle:
        metadata = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
    mesh = fields(metadata, 1)[0]  # GeometryPipelineMetadata.canonical_mesh
    vertex_buffer = np.array(fields(mesh, 3), dtype=np.uint32).view(np.float32)  # Mesh3d.vertex_buffer
    return vertex_buffer.reshape(-1, 5)[:, :3].copy()


def _focal_px(height: int) -> float:
    return 0.5 * height / np.tan(np.radians(CAMERA_VERTICAL_FOV_DEG) / 2)


def _face_distance(matrix: np.ndarray) -> np.ndarray:
    """Distance (cm) from the camera to the centroid of the posed canonical mesh, shape (..., 1).

    MediaPipe measures landmark depth from the face's mean depth, so that is where z = 0 is unprojected to.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    centroid = canonical_face_mesh().mean(axis=0).astype(np.float64)
    distance = -(matrix[..., 2, :3] @ centroid + matrix[..., 2, 3])
    if np.any(distance <= 0):
        raise InputError("pose matrix puts the face behind the camera")
    return distance[..., None]


def _unproject(points: np.ndarray, distance: np.ndarray, height: int, width: int) -> np.ndarray:
    """Image-normalised (..., N, 3) -> camera frame (..., N, 3), the face centroid `distance` cm away."""
    focal = _focal_px(height)
    # z is in image widths; at the face's distance one pixel spans distance / focal cm.
    depth = distance + points[..., 2] * width * distance / focal
    x = (points[..., 0] * width - width / 2) * depth / focal
    y = -(points[..., 1] * height - height / 2) * depth / focal  # image y down, camera y up
    return np.stack([x, y, -depth], axis=-1)


def _project(camera: np.ndarray, distance: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera frame (..., N, 3) -> image-normalised (..., N, 3); the inverse of `_unproject`."""
    focal = _focal_px(height)
    depth = -camera[..., 2]
    x = (camera[..., 0] * focal / depth + width / 2) / width
    y = (-camera[..., 1] * focal / depth + height / 2) / height
    z = (depth - distance) * focal / distance / width
    return np.stack([x, y, z], axis=-1)


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ np.swapaxes(matrix[..., :3, :3], -1, -2) + matrix[..., None, :3, 3]


def normalise_pose(points: np.ndarray, matrix: np.ndarray, image_size: int | tuple[int, int]) -> np.ndarray:
    """Image-normalised landmarks (N, 3) seen with pose `matrix` -> the pose-free face (N, 3) in cm.

    Batches work too: points (..., N, 3) with matrices (..., 4, 4).
    """
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    height, width = _hw(image_size)
    camera = _unproject(points, _face_distance(matrix), height, width)
    return _transform(camera, np.linalg.inv(matrix)).astype(np.float32)


def apply_pose(canonical: np.ndarray, matrix: np.ndarray, image_size: int | tuple[int, int]) -> np.ndarray:
    """Pose-free face (N, 3) in cm -> image-normalised landmarks (N, 3) seen with pose `matrix`.

    The exact inverse of `normalise_pose` for any matrix; batches (..., N, 3) with (..., 4, 4) work too.
    """
    canonical = np.asarray(canonical, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    height, width = _hw(image_size)
    camera = _transform(canonical, matrix)
    return _project(camera, _face_distance(matrix), height, width).astype(np.float32)


def estimate_pose(points: np.ndarray, image_size: int | tuple[int, int], iterations: int = 5) -> np.ndarray:
    """A pose matrix (4, 4) for image-normalised landmarks that come without one (Procrustes fit).

    The face's distance is unknown at first: unproject at a guess, fit rotation, translation and scale of the
    canonical mesh to it, and correct the guess by the fitted scale until the scale is 1 (MediaPipe iterates
    likewise). The matrix is a rigid motion, like MediaPipe's.
    """
    from skimage.transform import SimilarityTransform

    mesh = canonical_face_mesh().astype(np.float64)
    centroid = mesh.mean(axis=0)
    points = np.asarray(points, dtype=np.float64)[:NUM_MESH_LANDMARKS]
    height, width = _hw(image_size)
    distance = 50.0  # cm; any positive start converges
    for _ in range(iterations):
        camera = _unproject(points, np.array([distance]), height, width)
        fit = SimilarityTransform.from_estimate(mesh, camera)
        if not fit:
            raise InputError("cannot fit a pose to these landmarks (degenerate points)")
        # A face that fits at scale s when unprojected at distance d lies at d / s: rescale the fit to s = 1.
        rigid = fit.params / fit.scale
        distance = -(rigid[2, :3] @ centroid + rigid[2, 3])
        if distance <= 0:
            raise InputError("cannot fit a pose to these landmarks (face behind the camera)")
    matrix = np.eye(4)
    matrix[:3, :] = rigid[:3, :]
    return matrix.astype(np.float32)
