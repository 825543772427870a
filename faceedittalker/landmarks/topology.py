"""MediaPipe Face Landmarker topology: 478 points (468 mesh + 10 iris) and the ordered contours drawn in L.

The contours are MediaPipe's `FaceLandmarksConnections` written as ordered point lists (the tests check they give
the same edges), so that models, metrics and the synthetic renderer need not import MediaPipe. Left and right are
the subject's, as in MediaPipe: the subject's right eye is on the left of a frontal image.
"""

from __future__ import annotations

NUM_LANDMARKS = 478
NUM_MESH_LANDMARKS = 468  # the first 468 points are the face mesh; 468..477 are the two irises

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]  # fmt: skip
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# Upper and lower lids run from the outer corner to the inner one, so upper[i] sits above lower[i].
RIGHT_EYE_CORNERS = (33, 133)
RIGHT_EYE_UPPER = [246, 161, 160, 159, 158, 157, 173]
RIGHT_EYE_LOWER = [7, 163, 144, 145, 153, 154, 155]
LEFT_EYE_CORNERS = (263, 362)
LEFT_EYE_UPPER = [466, 388, 387, 386, 385, 384, 398]
LEFT_EYE_LOWER = [249, 390, 373, 374, 380, 381, 382]
RIGHT_IRIS = [468, 469, 470, 471, 472]  # centre first
LEFT_IRIS = [473, 474, 475, 476, 477]
RIGHT_BROW_UPPER = [70, 63, 105, 66, 107]  # outer -> inner
RIGHT_BROW_LOWER = [46, 53, 52, 65, 55]
LEFT_BROW_UPPER = [300, 293, 334, 296, 336]
LEFT_BROW_LOWER = [276, 283, 282, 295, 285]
FOREHEAD_TOP, CHIN, NOSE_TIP = 10, 152, 1
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # the inner-lip gap is the mouth opening


def _eye_contour(corners: tuple[int, int], upper: list[int], lower: list[int]) -> list[int]:
    return [corners[0], *upper, corners[1], *lower[::-1]]


RIGHT_EYE = _eye_contour(RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)  # closed loop
LEFT_EYE = _eye_contour(LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER)
MOUTH_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1]  # closed loop around the inner lips
LIP_POINTS = sorted(set(LIPS_OUTER_UPPER + LIPS_OUTER_LOWER + LIPS_INNER_UPPER + LIPS_INNER_LOWER))  # 40 points


def _path(points: list[int], closed: bool = False) -> list[tuple[int, int]]:
    return list(zip(points, points[1:] + points[:1] if closed else points[1:], strict=False))


def _lids(corners: tuple[int, int], upper: list[int], lower: list[int]) -> list[tuple[int, int]]:
    return _path([corners[0], *lower, corners[1]]) + _path([corners[0], *upper, corners[1]])


# The edges of each part, as MediaPipe lists them (same pairs and directions); the lips in four contours, so an
# open mouth reads clearly in L (AniPortrait colours its lips by segment too).
CONNECTIONS: dict[str, list[tuple[int, int]]] = {
    "face_oval": _path(FACE_OVAL, closed=True),
    "left_eyebrow": _path(LEFT_BROW_LOWER) + _path(LEFT_BROW_UPPER),
    "right_eyebrow": _path(RIGHT_BROW_LOWER) + _path(RIGHT_BROW_UPPER),
    "left_eye": _lids(LEFT_EYE_CORNERS, LEFT_EYE_UPPER, LEFT_EYE_LOWER),
    "right_eye": _lids(RIGHT_EYE_CORNERS, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
    "lips_upper_outer": _path(LIPS_OUTER_UPPER),
    "lips_lower_outer": _path(LIPS_OUTER_LOWER),
    "lips_upper_inner": _path(LIPS_INNER_UPPER),
    "lips_lower_inner": _path(LIPS_INNER_LOWER),
    "left_iris": _path(LEFT_IRIS[1:], closed=True),
    "right_iris": _path(RIGHT_IRIS[1:], closed=True),
}


def mouth_opening(landmarks):
    """Inner-lip opening (distance of points 13 and 14) per frame of (..., 478, 2|3) landmarks, in the units of
    the landmarks (image heights for image-normalised ones). Works on numpy arrays and torch tensors alike."""
    gap = landmarks[..., LOWER_INNER_LIP, :2] - landmarks[..., UPPER_INNER_LIP, :2]
    return (gap**2).sum(-1) ** 0.5
