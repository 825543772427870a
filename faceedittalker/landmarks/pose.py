"""Head pose of a landmark set: remove it (the pose-free face in cm) or restore it (any pose), and fit one.

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

import functools
import os
import zipfile

import numpy as np

from faceedittalker import ASSETS_DIR
from faceedittalker.errors import InputError
from faceedittalker.landmarks.render import image_hw
from faceedittalker.landmarks.topology import NUM_MESH_LANDMARKS

DEFAULT_MODEL_PATH = ASSETS_DIR / "face_landmarker.task"  # the bundle holds the canonical mesh too
# MediaPipe's face-geometry camera (perspective_camera in the Face Landmarker graph).
CAMERA_VERTICAL_FOV_DEG = 63.0


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
    height, width = image_hw(image_size)
    camera = _unproject(points, _face_distance(matrix), height, width)
    return _transform(camera, np.linalg.inv(matrix)).astype(np.float32)


def apply_pose(canonical: np.ndarray, matrix: np.ndarray, image_size: int | tuple[int, int]) -> np.ndarray:
    """Pose-free face (N, 3) in cm -> image-normalised landmarks (N, 3) seen with pose `matrix`.

    The exact inverse of `normalise_pose` for any matrix; batches (..., N, 3) with (..., 4, 4) work too.
    """
    canonical = np.asarray(canonical, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    height, width = image_hw(image_size)
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
    height, width = image_hw(image_size)
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
