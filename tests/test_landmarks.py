"""Landmarks on a real portrait: detection, geometry, pose round trip, rendering."""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np
import pytest
from media_fixtures import astronaut
from PIL import Image

from faceedittalker.errors import InputError
from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.pose import apply_pose, canonical_face_mesh, estimate_pose, normalise_pose
from faceedittalker.landmarks.render import render_landmarks
from faceedittalker.landmarks.topology import CONNECTIONS, NUM_LANDMARKS

# MediaPipe indices: outer eye corners (subject's right 33, left 263), upper/lower inner lip, chin, forehead.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, UPPER_LIP, LOWER_LIP, CHIN, FOREHEAD = 33, 263, 13, 14, 152, 10


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="module")
def face(portrait):
    with FaceLandmarker() as landmarker:
        found = landmarker.detect(portrait)
    assert found is not None
    return found


def test_astronaut_landmarks_have_plausible_geometry(face, portrait):
    points = face.points
    assert points.shape == (NUM_LANDMARKS, 3) and points.dtype == np.float32
    assert face.matrix.shape == (4, 4) and len(face.blendshapes) == 52
    pixels = face.pixels(portrait.shape[:2])
    eyes_y = pixels[[RIGHT_EYE_OUTER, LEFT_EYE_OUTER], 1]
    mouth_y = pixels[[UPPER_LIP, LOWER_LIP], 1]
    assert eyes_y.max() < mouth_y.min()  # eyes above the mouth
    assert pixels[FOREHEAD, 1] < eyes_y.min() and pixels[CHIN, 1] > mouth_y.max()
    assert pixels[RIGHT_EYE_OUTER, 0] < pixels[LEFT_EYE_OUTER, 0]  # subject's right eye on the image left
    # The face in this portrait is about 90 px wide; outer eye corners are about 2/3 of that apart.
    inter_ocular = np.linalg.norm(pixels[RIGHT_EYE_OUTER] - pixels[LEFT_EYE_OUTER])
    assert 40 < inter_ocular < 90
    # The whole face lies where the astronaut's face is (head in the upper-middle of the image).
    centre = pixels.mean(axis=0)
    assert 180 < centre[0] < 280 and 80 < centre[1] < 170
    # The mouth lies inside the face oval polygon.
    oval_ids = [a for a, _ in CONNECTIONS["face_oval"]]
    oval = pixels[oval_ids].astype(np.float32)
    hull = cv2.convexHull(oval)
    for index in (UPPER_LIP, LOWER_LIP, 61, 291):
        assert cv2.pointPolygonTest(hull, tuple(map(float, pixels[index])), True) > 5
    # A smiling astronaut: mouthSmile blendshapes are clearly on.
    assert face.blendshapes["mouthSmileLeft"] > 0.3 and face.blendshapes["mouthSmileRight"] > 0.3


def test_video_mode_tracks_the_same_face(portrait, face):
    with FaceLandmarker(mode="video") as landmarker:
        tracked = [landmarker.detect_video_frame(portrait, timestamp_ms=40 * i) for i in range(3)]
    for result in tracked:
        assert result is not None
        assert np.abs(result.points[:, :2] - face.points[:, :2]).max() < 0.01


def test_no_face_gives_none_and_bad_images_input_errors():
    with FaceLandmarker() as landmarker:
        assert landmarker.detect(np.zeros((256, 256, 3), np.uint8)) is None
        with pytest.raises(InputError, match="greyscale"):
            landmarker.detect(np.zeros((64, 64), np.uint8))
        with pytest.raises(InputError, match="shape"):
            landmarker.detect(np.zeros((64, 64, 4), np.uint8))
        with pytest.raises(InputError, match="dtype"):
            landmarker.detect(np.zeros((64, 64, 3), np.float32))


def test_missing_model_file_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="nothere.task"):
        FaceLandmarker(tmp_path / "nothere.task")


def test_normalise_then_apply_pose_round_trips(face, portrait):
    canonical = normalise_pose(face.points, face.matrix, portrait.shape[:2])
    back = apply_pose(canonical, face.matrix, portrait.shape[:2])
    assert np.abs(back - face.points).max() < 1e-4
    # The pose-free face is the canonical MediaPipe face up to this person's shape (cm).
    mesh = canonical_face_mesh()
    rms = np.sqrt(((canonical[: len(mesh)] - mesh) ** 2).sum(axis=1).mean())
    assert rms < 1.5
    # Batches of frames work the same, and non-square images too.
    points = np.stack([face.points, face.points])
    matrices = np.stack([face.matrix, face.matrix])
    batch = normalise_pose(points, matrices, (512, 640))
    assert np.abs(apply_pose(batch, matrices, (512, 640)) - points).max() < 1e-4


def test_apply_pose_with_a_new_pose_turns_the_face(face, portrait):
    canonical = normalise_pose(face.points, face.matrix, 512)
    yaw = math.radians(25)
    turn = np.eye(4, dtype=np.float32)
    turn[:3, :3] = [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    turned = apply_pose(canonical, face.matrix @ turn, 512)
    # Turning towards the subject's left moves the nose tip right in the image, relative to the eyes.
    nose, eyes = 1, [RIGHT_EYE_OUTER, LEFT_EYE_OUTER]
    before = face.points[nose, 0] - face.points[eyes, 0].mean()
    after = turned[nose, 0] - turned[eyes, 0].mean()
    assert after > before + 0.005


def test_estimate_pose_recovers_mediapipes_matrix(face, portrait):
    estimated = estimate_pose(face.points, portrait.shape[:2])
    relative = estimated[:3, :3].T @ face.matrix[:3, :3]
    angle = math.degrees(math.acos(np.clip((np.trace(relative) - 1) / 2, -1, 1)))
    assert angle < 5
    assert np.abs(estimated[:3, 3] - face.matrix[:3, 3]).max() < 2.0  # cm
    canonical = normalise_pose(face.points, estimated, 512)
    assert np.abs(apply_pose(canonical, estimated, 512) - face.points).max() < 1e-4


def test_rendered_landmark_image_is_deterministic_and_coloured(face, tmp_path):
    image = render_landmarks(face.points, 512)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    again = render_landmarks(face.points.copy(), 512)
    assert hashlib.sha256(image.tobytes()).hexdigest() == hashlib.sha256(again.tobytes()).hexdigest()
    # Drawn pixels lie on the face only; the canvas is black elsewhere.
    drawn = np.argwhere(image.any(axis=2))
    assert 0.005 < len(drawn) / image[..., 0].size < 0.1
    assert drawn[:, 0].min() > 50 and drawn[:, 0].max() < 220  # rows: the face band
    # Every part has its own colour, all present.
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert len(colours - {(0, 0, 0)}) >= 8
    # Non-square canvas and (478, 2) input.
    wide = render_landmarks(face.points[:, :2], (256, 384), thickness=1)
    assert wide.shape == (256, 384, 3) and wide.any()
    path = tmp_path / "landmarks.png"
    Image.fromarray(image).save(path)
    assert np.array_equal(np.asarray(Image.open(path)), image)


def test_render_rejects_wrong_shapes():
    with pytest.raises(InputError):
        render_landmarks(np.zeros((10, 2)), 64)
