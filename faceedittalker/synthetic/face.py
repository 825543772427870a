"""Synthetic faces with known truth: identities, attribute labels and exact landmarks in MediaPipe's
478-point topology (the drawing half of the synthetic world; `sets` writes the data sets).

Faces are drawn from a template mesh (a real face, `assets/template_mesh.npy`, see `build_template_mesh`):
the 468 mesh points are Delaunay-triangulated and the triangles filled with skin shaded by their normal;
eyes, brows, lips, hair, glasses and beards are drawn from the landmark contours. Identity deforms the mesh
(face and jaw width, eye size and spacing, nose, lips), expression moves jaw, lips and lids, pose rotates
the head. Rendered at twice the size and downscaled with area averaging for antialiasing.

Coordinates. The canonical frame is the image frame of a frontal face: x right, y down, z away from the
camera, in units of the template's face height (forehead point 10 to chin 152), centred on the mesh mean.
Landmarks written to disk are image-normalised like MediaPipe's: x / width, y / height, and z in image widths
relative to the head centre (smaller = closer). The projection is orthographic.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from faceedittalker import ASSETS_DIR
from faceedittalker.data.attributes import CELEBA_ATTRIBUTES
from faceedittalker.landmarks.topology import (
    CHIN,
    FACE_OVAL,
    FOREHEAD_TOP,
    LEFT_BROW_LOWER,
    LEFT_BROW_UPPER,
    LEFT_EYE,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    LIP_POINTS,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    MOUTH_INNER,
    NOSE_TIP,
    RIGHT_BROW_LOWER,
    RIGHT_BROW_UPPER,
    RIGHT_EYE,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
)

TEMPLATE_MESH_PATH = ASSETS_DIR / "template_mesh.npy"

# Points of the face that only the renderer needs (the contours are `landmarks.topology`).
RIGHT_CHEEK, LEFT_CHEEK = 50, 280
RIGHT_NOSTRIL, LEFT_NOSTRIL = 98, 327
RIGHT_FACE_SIDE, LEFT_FACE_SIDE = 234, 454  # face oval at ear level

# --- attributes ---

# Attributes the renderer draws truthfully; every other CelebA attribute is written as absent (-1).
RENDERED_ATTRIBUTES: tuple[str, ...] = (
    "Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair",
    "Bald", "Bangs", "Mustache", "No_Beard", "Goatee", "Pale_Skin", "Heavy_Makeup", "Wearing_Lipstick",
    "Male", "Young", "Rosy_Cheeks", "Big_Lips", "Big_Nose", "Narrow_Eyes", "Bushy_Eyebrows",
    "5_o_Clock_Shadow", "Wearing_Earrings",
)  # fmt: skip

HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "Black_Hair": (28, 24, 24),
    "Brown_Hair": (96, 60, 36),
    "Blond_Hair": (222, 188, 120),
    "Gray_Hair": (168, 168, 172),
    "auburn": (150, 62, 34),  # a hair colour that is none of CelebA's four
}
SKIN_TONES = np.array(
    [(236, 200, 172), (224, 176, 140), (198, 142, 104), (160, 108, 74), (112, 74, 52)], float
)  # light -> dark
PALE_SKIN = np.array([246, 228, 218], float)
EYE_COLOURS = np.array([(70, 110, 170), (80, 120, 80), (90, 60, 35), (50, 32, 20), (120, 95, 50)], float)
LIPSTICK_COLOURS = np.array([(196, 24, 48), (220, 60, 110), (140, 20, 60), (230, 80, 70)], float)
EYESHADOW_COLOURS = np.array([(120, 70, 140), (60, 90, 150), (150, 100, 70), (90, 60, 60)], float)


# --- the template ---


def build_template_mesh(points: np.ndarray, matrix: np.ndarray, image_size: int) -> np.ndarray:
    """Turn detected landmarks of a real face into the canonical template (478, 3) float32.

    The face is rotated to frontal with the inverse of MediaPipe's pose matrix, mirrored onto itself (each
    point averaged with its mirror partner, partners matched by an optimal assignment) so generated faces are
    symmetric unless asked otherwise, then centred and scaled to unit face height.
    """
    from scipy.optimize import linear_sum_assignment

    pixels = np.asarray(points, np.float64) * image_size
    pixels -= pixels[:468].mean(axis=0)
    # MediaPipe's matrix works in a y-up, z-towards-camera frame; ours is y-down, z-away (a 180 deg turn
    # about x), so the inverse rotation in our frame is F R^T F.
    flip = np.diag([1.0, -1.0, -1.0])
    rotation = np.asarray(matrix, np.float64)[:3, :3]
    frontal = pixels @ (flip @ rotation.T @ flip).T
    mirrored = frontal * np.array([-1.0, 1.0, 1.0])
    cost = ((frontal[:, None, :] - mirrored[None, :, :]) ** 2).sum(-1)
    _, partner = linear_sum_assignment(cost)
    symmetric = 0.5 * (frontal + mirrored[partner])
    symmetric -= symmetric[:468].mean(axis=0)
    return (symmetric / (symmetric[CHIN, 1] - symmetric[FOREHEAD_TOP, 1])).astype(np.float32)


@functools.lru_cache(maxsize=1)
def template_mesh() -> np.ndarray:
    """The canonical template (478, 3) with a closed, neutral mouth."""
    if not TEMPLATE_MESH_PATH.is_file():
        raise FileNotFoundError(
            f"{TEMPLATE_MESH_PATH} is missing; rebuild it with `python scripts/make_template_mesh.py`"
        )
    points = np.load(TEMPLATE_MESH_PATH).astype(np.float64)
    # The source portrait smiles with parted lips: undo both so expression 0 is a neutral closed mouth.
    points = _smile(points, -TEMPLATE_SMILE)
    # Close the lips column by column: everything that follows the jaw moves up by the gap above it.
    gap = points[LIPS_INNER_LOWER, 1] - points[LIPS_INNER_UPPER, 1]
    xs = points[LIPS_INNER_LOWER, 0]
    order = np.argsort(xs)
    points[:, 1] -= _jaw_weight(points) * np.interp(points[:, 0], xs[order], gap[order])
    return points


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(K, 3) triangles of the 468 mesh points (Delaunay on the frontal template)."""
    points = np.load(TEMPLATE_MESH_PATH)[:468, :2] if TEMPLATE_MESH_PATH.is_file() else None
    return Delaunay(points).simplices.astype(np.int32)


TEMPLATE_SMILE = 0.55  # how much the source portrait smiles, in units of `_smile`


# --- mesh deformations (canonical frame) ---


def _rbf(points: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((points[:, :2] - centre[:2]) ** 2).sum(-1) / (2 * sigma**2))


def _scale_region(points, indices, factors, sigma, centre=None, reference=None):
    """Scale points around `centre` by per-axis `factors`; `indices` fully, neighbours with an RBF falloff."""
    reference = points if reference is None else reference
    centre = reference[indices].mean(axis=0) if centre is None else centre
    weight = _rbf(reference, centre, sigma)
    weight[indices] = 1.0
    return points + weight[:, None] * (np.asarray(factors) - 1.0) * (points - centre)


def _shift_region(points, indices, offset, sigma, reference=None):
    reference = points if reference is None else reference
    weight = _rbf(reference, reference[indices].mean(axis=0), sigma)
    weight[indices] = 1.0
    return points + weight[:, None] * np.asarray(offset)


def _jaw_weight(reference: np.ndarray) -> np.ndarray:
    """How much each point follows the jaw: 1 on the lower lip and chin, 0 on the upper lip and above."""
    corner_y = reference[[61, 291], 1].mean()
    upper_y = np.interp(reference[:, 0], reference[LIPS_INNER_UPPER, 0], reference[LIPS_INNER_UPPER, 1])
    lower_y = np.interp(reference[:, 0], reference[LIPS_INNER_LOWER, 0], reference[LIPS_INNER_LOWER, 1])
    half_width = 0.5 * (reference[291, 0] - reference[61, 0])
    inside = np.abs(reference[:, 0] - reference[LIPS_INNER_UPPER, 0].mean()) < half_width
    # Within the mouth's width the lip line splits upper from lower; beyond it the cheek stretches smoothly.
    mid_y = 0.5 * (upper_y + lower_y)
    weight = np.where(
        inside,
        np.clip((reference[:, 1] - mid_y) / 0.004 + 0.5, 0, 1),
        np.clip((reference[:, 1] - corner_y) / 0.18, 0, 1),
    )
    weight[LIPS_INNER_UPPER[1:-1] + LIPS_OUTER_UPPER[1:-1]] = 0.0
    weight[LIPS_INNER_LOWER[1:-1] + LIPS_OUTER_LOWER[1:-1]] = 1.0
    weight[[61, 291, 78, 308]] = 0.5
    return weight


def _open_jaw(points: np.ndarray, opening: float, reference: np.ndarray | None = None) -> np.ndarray:
    """Drop the jaw so the lips part by about `opening` face heights (rotation about a hinge by the ears)."""
    reference = points if reference is None else reference
    hinge = np.array([0.0, reference[NOSE_TIP, 1] - 0.05, reference[:468, 2].mean() + 0.45])
    radius = np.hypot(*(reference[14, 1:] - hinge[1:]))
    angle = opening / radius
    cos, sin = np.cos(angle), np.sin(angle)
    rel = points - hinge
    # Rotation about x: the chin swings down and slightly back.
    rotated = np.stack([rel[:, 0], cos * rel[:, 1] - sin * rel[:, 2], sin * rel[:, 1] + cos * rel[:, 2]], 1)
    weight = _jaw_weight(reference)[:, None]
    return points + weight * (rotated + hinge - points)


def _smile(points: np.ndarray, amount: float) -> np.ndarray:
    """Pull the mouth corners up and out and raise the cheeks."""
    out = points.copy()
    for corner, side in ((61, -1.0), (291, 1.0)):
        weight = _rbf(points, points[corner], 0.07)[:, None]
        out += amount * weight * np.array([0.035 * side, -0.035, -0.01])
    for cheek in (RIGHT_CHEEK, LEFT_CHEEK):
        out += amount * _rbf(points, points[cheek], 0.08)[:, None] * np.array([0.0, -0.015, -0.01])
    return out


def _spread_lips(points: np.ndarray, spread: float) -> np.ndarray:
    """Widen (spread > 0, as for 'ee') or round and push out (spread < 0, as for 'oo') the lips."""
    centre = points[LIP_POINTS].mean(axis=0)
    out = _scale_region(points, LIP_POINTS, (1.0 + 0.25 * spread, 1.0, 1.0), 0.06, centre)
    if spread < 0:
        out = _shift_region(out, LIP_POINTS, (0.0, 0.0, 0.05 * spread), 0.05)
    return out


def _close_lids(points: np.ndarray, upper: list[int], lower: list[int], amount: float) -> np.ndarray:
    """Lower the upper lid towards the lower one (amount 1 = closed) and the skin above it with it."""
    out = points.copy()
    offsets = (points[lower, 1] - points[upper, 1]) * 0.92 * amount
    out[upper, 1] += offsets
    lid_top = points[upper, 1].max()
    above = np.setdiff1d(np.arange(len(points)), upper + lower)
    weight = np.zeros(len(points))
    for index, offset in zip(upper, offsets, strict=True):
        w = _rbf(points, points[index], 0.02) * (points[:, 1] < lid_top)
        weight[above] = np.maximum(weight[above], w[above] * 0.5 * offset)
    out[:, 1] += weight
    return out


# --- identity, expression, pose ---


@dataclass
class Identity:
    """Everything that stays fixed for one person: shape, colours, style and the attribute labels."""

    attributes: dict[str, bool]
    face_width: float = 1.0
    face_length: float = 1.0
    jaw_width: float = 1.0
    eye_size: float = 1.0
    eye_height: float = 1.0
    eye_spacing: float = 0.0
    nose_size: float = 1.0
    lip_thickness: float = 1.0
    mouth_width: float = 1.0
    brow_thickness: float = 1.0
    skin_tone: float = 0.3  # 0 light .. 1 dark
    skin: tuple[float, float, float] = (224.0, 176.0, 140.0)
    eye_colour: tuple[float, float, float] = (70.0, 110.0, 170.0)
    hair_colour_name: str = "Brown_Hair"
    hair_volume: float = 0.12
    lipstick: tuple[float, float, float] = (196.0, 24.0, 48.0)
    eyeshadow: tuple[float, float, float] = (120.0, 70.0, 140.0)
    background: tuple[tuple[float, ...], tuple[float, ...]] = ((90, 120, 160), (200, 210, 220))
    background_angle: float = 0.0
    shirt: tuple[float, float, float] = (60.0, 80.0, 120.0)
    light: tuple[float, float, float] = (-0.3, -0.4, -1.0)
    glasses_colour: tuple[float, float, float] = (20.0, 20.0, 20.0)
    seed: int = 0  # fixes per-person texture (stubble grain)
    # Uniform draws behind the attribute-dependent looks (jaw, brows, lips, nose, eyes, smile, opening):
    # `with_attributes` maps them into the range of the attribute's on or off state.
    shape_draws: tuple[float, ...] = (0.5,) * 8

    def labels(self) -> np.ndarray:
        """The 40 CelebA labels in standard order, +1 / -1 (non-rendered attributes are -1)."""
        values = [1 if self.attributes.get(name, False) else -1 for name in CELEBA_ATTRIBUTES]
        return np.array(values, np.int8)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Expression:
    """Per-frame face motion. `jaw_open` and `spread` are in face heights / fractions, blinks in [0, 1]."""

    jaw_open: float = 0.0
    smile: float = 0.0
    spread: float = 0.0
    blink_right: float = 0.0
    blink_left: float = 0.0


@dataclass
class Pose:
    """Head pose in degrees and the face's placement (offsets in image fractions)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0


def _pick(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def sample_identity(rng: np.random.Generator, **overrides: bool) -> Identity:
    """A random person; `overrides` (attribute name -> bool) force attributes, e.g. `Eyeglasses=True`."""
    male = _pick(rng, 0.45)
    young = _pick(rng, 0.75)
    attrs: dict[str, bool] = {"Male": male, "Young": young}
    attrs["Eyeglasses"] = _pick(rng, 0.15)
    attrs["Smiling"] = _pick(rng, 0.45)
    attrs["Mouth_Slightly_Open"] = _pick(rng, 0.55 if attrs["Smiling"] else 0.3)
    attrs["Bald"] = male and _pick(rng, 0.1 if young else 0.25)
    attrs["Bangs"] = not attrs["Bald"] and _pick(rng, 0.12 if male else 0.25)
    attrs["Pale_Skin"] = _pick(rng, 0.06)
    attrs["Heavy_Makeup"] = not male and _pick(rng, 0.55)
    attrs["Wearing_Lipstick"] = not male and _pick(rng, 0.7 if attrs["Heavy_Makeup"] else 0.3)
    attrs["Mustache"] = male and _pick(rng, 0.2)
    attrs["Goatee"] = male and _pick(rng, 0.2)
    attrs["5_o_Clock_Shadow"] = male and _pick(rng, 0.2)
    attrs["Rosy_Cheeks"] = _pick(rng, 0.1 if male else 0.2)
    attrs["Big_Lips"] = _pick(rng, 0.25)
    attrs["Big_Nose"] = _pick(rng, 0.3 if male else 0.15)
    attrs["Narrow_Eyes"] = _pick(rng, 0.12)
    attrs["Bushy_Eyebrows"] = _pick(rng, 0.3 if male else 0.08)
    attrs["Wearing_Earrings"] = not male and _pick(rng, 0.35)
    hair_weights = np.array([0.3, 0.3, 0.2, 0.06 if young else 0.5, 0.12])
    hair = str(rng.choice(list(HAIR_COLOURS), p=hair_weights / hair_weights.sum()))
    for name in ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair"):
        attrs[name] = hair == name
    tone = float(rng.beta(1.6, 2.2))
    identity = Identity(
        attributes=attrs,
        face_width=float(rng.uniform(0.92, 1.08)),
        face_length=float(rng.uniform(0.94, 1.06)),
        eye_spacing=float(rng.uniform(-0.02, 0.02)),
        mouth_width=float(rng.uniform(0.9, 1.1)),
        skin_tone=tone,
        eye_colour=tuple(EYE_COLOURS[rng.integers(len(EYE_COLOURS))] * rng.uniform(0.85, 1.15)),
        hair_colour_name=hair,
        hair_volume=float(rng.uniform(0.06, 0.16)),
        lipstick=tuple(LIPSTICK_COLOURS[rng.integers(len(LIPSTICK_COLOURS))]),
        eyeshadow=tuple(EYESHADOW_COLOURS[rng.integers(len(EYESHADOW_COLOURS))]),
        background=(tuple(rng.uniform(30, 230, 3)), tuple(rng.uniform(30, 230, 3))),
        background_angle=float(rng.uniform(0, 2 * np.pi)),
        shirt=tuple(rng.uniform(20, 220, 3)),
        light=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.6, -0.1)), -1.0),
        glasses_colour=tuple(rng.uniform(0, 90, 3)) if _pick(rng, 0.7) else (150.0, 120.0, 60.0),
        seed=int(rng.integers(2**31)),
        shape_draws=tuple(float(v) for v in rng.random(8)),
    )
    return with_attributes(identity, **overrides)


def with_attributes(identity: Identity, **changes: bool) -> Identity:
    """The same person with some attributes set on or off; other looks follow (a new hair colour for
    `Black_Hair=False`, a goatee and moustache for `No_Beard=False`, ...)."""
    unknown = set(changes) - set(RENDERED_ATTRIBUTES)
    if unknown:
        raise ValueError(f"not a rendered attribute: {sorted(unknown)}")
    attrs = dict(identity.attributes)
    hair = identity.hair_colour_name
    for name, on in changes.items():
        on = bool(on)
        if name in HAIR_COLOURS:
            if on:
                hair = name
            elif hair == name:
                hair = "auburn"
        elif name == "No_Beard":
            if on:
                attrs["Mustache"] = attrs["Goatee"] = False
            elif not (attrs["Mustache"] or attrs["Goatee"]):
                attrs["Mustache"] = attrs["Goatee"] = True
        else:
            attrs[name] = on
        if name == "Bald" and on:
            attrs["Bangs"] = False
        if name == "Bangs" and on:
            attrs["Bald"] = False
    for name in ("Black_Hair", "Brown_Hair", "Blond_Hair", "Gray_Hair"):
        attrs[name] = hair == name and not attrs["Bald"]
    attrs["No_Beard"] = not (attrs["Mustache"] or attrs["Goatee"])
    draws = identity.shape_draws
    tone = identity.skin_tone
    skin = np.array([np.interp(tone * 4, np.arange(5), SKIN_TONES[:, c]) for c in range(3)])
    if attrs["Pale_Skin"]:
        skin = 0.35 * skin + 0.65 * PALE_SKIN
    return dataclasses.replace(
        identity,
        attributes=attrs,
        hair_colour_name=hair,
        skin=tuple(skin),
        jaw_width=(1.04 + 0.06 * draws[0]) if attrs["Male"] else (0.9 + 0.06 * draws[0]),
        brow_thickness=(2.3 + 0.4 * draws[1]) if attrs["Bushy_Eyebrows"] else (0.8 + 0.3 * draws[1]),
        lip_thickness=(1.3 + 0.2 * draws[2]) if attrs["Big_Lips"] else (0.8 + 0.25 * draws[2]),
        nose_size=(1.2 + 0.12 * draws[3]) if attrs["Big_Nose"] else (0.88 + 0.14 * draws[3]),
        eye_height=(0.55 + 0.1 * draws[4]) if attrs["Narrow_Eyes"] else (0.95 + 0.2 * draws[4]),
        eye_size=0.92 + 0.16 * draws[5],
    )


def rest_expression(identity: Identity) -> Expression:
    """The expression an identity's still image shows (its Smiling and Mouth_Slightly_Open labels)."""
    draws = identity.shape_draws
    return Expression(
        jaw_open=(0.035 + 0.035 * draws[6]) if identity.attributes["Mouth_Slightly_Open"] else 0.0,
        smile=(0.8 + 0.4 * draws[7]) if identity.attributes["Smiling"] else 0.0,
    )


def identity_mesh(identity: Identity) -> np.ndarray:
    """Canonical (478, 3) landmarks of a person's neutral face."""
    base = template_mesh()
    p = base.copy()
    p[:, 0] *= identity.face_width
    below_eyes = np.clip((base[:, 1] - base[RIGHT_EYE, 1].mean()) / 0.4, 0, 1)
    p[:, 1] += below_eyes * (identity.face_length - 1.0) * (base[:, 1] - base[RIGHT_EYE, 1].mean())
    below_mouth = np.clip((base[:, 1] - base[61, 1]) / 0.25 + 0.3, 0, 1)
    p[:, 0] *= 1.0 + below_mouth * (identity.jaw_width - 1.0)
    for eye, iris, side in ((RIGHT_EYE, RIGHT_IRIS, -1.0), (LEFT_EYE, LEFT_IRIS, 1.0)):
        region = eye + iris
        centre = p[eye].mean(axis=0)
        p = _scale_region(p, region, (identity.eye_size, identity.eye_size * identity.eye_height, 1.0), 0.05,
                          centre, reference=p)  # fmt: skip
        p = _shift_region(p, region, (side * identity.eye_spacing, 0.0, 0.0), 0.07, reference=p)
    nose = [1, 2, 4, 5, 19, 94, 98, 327, 97, 326, 129, 358, 48, 278, 64, 294, 102, 331, 49, 279]
    # Grow the nose about its root (point 168, between the eyes) so it lengthens down and widens.
    p = _scale_region(p, nose, (identity.nose_size,) * 3, 0.03, centre=p[168])
    lip_centre = p[LIP_POINTS].mean(axis=0)
    return _scale_region(p, LIP_POINTS, (identity.mouth_width, identity.lip_thickness, 1.0), 0.04, lip_centre)


def apply_expression(p: np.ndarray, expression: Expression) -> np.ndarray:
    """Move jaw, lips and lids of a canonical (478, 3) face."""
    smile = expression.smile
    if smile:
        p = _smile(p, smile)
    if expression.spread:
        p = _spread_lips(p, expression.spread)
    if expression.jaw_open:
        p = _open_jaw(p, expression.jaw_open)
    if expression.blink_right:
        p = _close_lids(p, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, expression.blink_right)
    if expression.blink_left:
        p = _close_lids(p, LEFT_EYE_UPPER, LEFT_EYE_LOWER, expression.blink_left)
    return p


# --- rendering ---

SUPERSAMPLE = 2
FACE_HEIGHT = 0.42  # face height (forehead point to chin) as a fraction of the image height
FACE_CENTRE_Y = 0.53
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel polygon vertices
_HEAD_CENTRE = np.array([0.0, 0.02, 0.45])  # pivot of head rotations, behind the face (face heights)


def _rotation(pose: Pose) -> np.ndarray:
    yaw, pitch, roll = np.radians([pose.yaw, pose.pitch, pose.roll])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    return rz @ rx @ ry


class _Camera:
    """Canonical points -> image pixels (x, y) and depth, for one pose and canvas size."""

    def __init__(self, pose: Pose, size: int):
        self.rotation = _rotation(pose)
        self.scale = FACE_HEIGHT * size * pose.scale
        self.offset = np.array([(0.5 + pose.shift_x) * size, (FACE_CENTRE_Y + pose.shift_y) * size, 0.0])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        rotated = (np.asarray(points, np.float64) - _HEAD_CENTRE) @ self.rotation.T + _HEAD_CENTRE
        return rotated * self.scale + self.offset


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(xy)[..., :2] * (1 << _SHIFT)).astype(np.int32)


def _fill(canvas: np.ndarray, polygon: np.ndarray, colour) -> None:
    cv2.fillPoly(canvas, [_pts(polygon)], tuple(float(c) for c in colour), cv2.LINE_8, _SHIFT)


def _blend(canvas: np.ndarray, mask: np.ndarray, colour, alpha: float) -> None:
    """canvas <- canvas * (1 - alpha * mask) + colour * alpha * mask, mask in [0, 1] (float32 canvas)."""
    weight = (alpha * mask)[..., None]
    canvas *= 1.0 - weight
    canvas += weight * np.asarray(colour, np.float32)


def _mask(shape: tuple[int, int], polygons: list[np.ndarray], blur: float = 0.0) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    cv2.fillPoly(mask, [_pts(p) for p in polygons], 1.0, cv2.LINE_8, _SHIFT)
    if blur:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    return mask


def _polyline(canvas, points, colour, thickness: float, closed: bool = False) -> None:
    cv2.polylines(canvas, [_pts(points)], closed, tuple(float(c) for c in colour),
                  max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)  # fmt: skip


def _arc(a: np.ndarray, b: np.ndarray, bulge: np.ndarray, n: int = 8) -> np.ndarray:
    """Quadratic curve from a to b through the control point bulge (canonical 3-D points)."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * t * (1 - t) * bulge + t**2 * b


def _hair_outline(p: np.ndarray, identity: Identity, long: bool) -> np.ndarray:
    """Canonical outline of the hair mass seen from the front (a closed polygon, z at the head centre)."""
    half_width = 0.5 * (p[LEFT_FACE_SIDE, 0] - p[RIGHT_FACE_SIDE, 0])
    eye_y = p[RIGHT_EYE + LEFT_EYE, 1].mean()
    top = p[FOREHEAD_TOP, 1] - 0.2
    volume = identity.hair_volume
    angles = np.linspace(0, np.pi, 24)
    a, b = half_width * (1.1 + volume), (eye_y - top) * (1.0 + volume)
    cap = np.stack([-a * np.cos(angles), eye_y - b * np.sin(angles), np.full_like(angles, 0.3)], 1)
    bottom = p[CHIN, 1] + 0.35 if long else eye_y + 0.08
    flare = 0.12 if long else -0.02
    sides = np.array([[a + flare, bottom, 0.3], [-a - flare, bottom, 0.3]])
    return np.concatenate([sides[1:], cap, sides[:1]])


def render_face(
    identity: Identity, expression: Expression, pose: Pose, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face. Returns the (size, size, 3) uint8 RGB image and its (478, 3) float32 landmarks,
    image-normalised like MediaPipe's output."""
    big = size * SUPERSAMPLE
    attrs = identity.attributes
    rng = np.random.default_rng(identity.seed)  # per-person texture, identical in every frame
    neutral = identity_mesh(identity)
    mesh = apply_expression(neutral, expression)
    camera = _Camera(pose, big)
    posed = camera(mesh)
    skin = np.asarray(identity.skin, np.float32)
    hair = np.asarray(HAIR_COLOURS[identity.hair_colour_name], np.float32)
    if not attrs["Young"] and identity.hair_colour_name != "Gray_Hair":
        hair = 0.8 * hair + 0.2 * np.array(HAIR_COLOURS["Gray_Hair"])  # greying, below the Gray_Hair label

    # Background: a linear gradient between two colours.
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float32) / big
    direction = np.cos(identity.background_angle), np.sin(identity.background_angle)
    t = np.clip((xs - 0.5) * direction[0] + (ys - 0.5) * direction[1] + 0.5, 0, 1)[..., None]
    c0, c1 = (np.asarray(c, np.float32) for c in identity.background)
    canvas = (c0 * (1 - t) + c1 * t).astype(np.float32)

    long_hair = not attrs["Male"] and not attrs["Bald"]
    # Hair, neck and shoulders hang from the head, not from the jaw: placed from the neutral face.
    hair_outline = camera(_hair_outline(neutral, identity, long_hair))
    if not attrs["Bald"]:
        _fill(canvas, hair_outline, hair * 0.8)  # the back of the hair, darker

    # Neck and shoulders follow the head's position but not its rotation.
    jaw_l, jaw_r, chin = camera(neutral[[172, 397, CHIN]])
    neck_w = 0.6 * (jaw_r[0] - jaw_l[0]) / 2
    neck_x = 0.5 * (jaw_l[0] + jaw_r[0])
    neck = np.array([[neck_x - neck_w, jaw_l[1] - 0.05 * big], [neck_x + neck_w, jaw_r[1] - 0.05 * big],
                     [neck_x + neck_w * 1.1, big * 1.1], [neck_x - neck_w * 1.1, big * 1.1]])  # fmt: skip
    _fill(canvas, neck, skin * 0.72)
    shoulders_y = chin[1] + 0.22 * big
    cv2.ellipse(canvas, (int(neck_x), int(shoulders_y + 0.3 * big)), (int(0.48 * big), int(0.34 * big)),
                0, 180, 360, tuple(map(float, identity.shirt)), -1, cv2.LINE_AA)  # fmt: skip
    _fill(canvas, neck[[0, 1]].tolist() + [[neck_x, chin[1] + 0.1 * big]], skin * 0.55)  # shadow under chin
    cv2.ellipse(canvas, (int(neck_x), int(shoulders_y)), (int(neck_w * 1.1), int(0.03 * big)), 0, 0, 180,
                tuple(map(float, skin * 0.72)), -1, cv2.LINE_AA)  # fmt: skip

    # Ears, behind the face.
    for side_index, side in ((RIGHT_FACE_SIDE, -1.0), (LEFT_FACE_SIDE, 1.0)):
        centre = mesh[side_index] + np.array([side * 0.02, 0.03, 0.15])
        angles = np.linspace(0, 2 * np.pi, 16)
        ear = centre + np.stack([0.05 * np.cos(angles) * side, 0.11 * np.sin(angles), 0 * angles], 1)
        _fill(canvas, camera(ear), skin * 0.85)

    # Skull: hair or bare skin.
    if attrs["Bald"]:
        skull = _hair_outline(neutral, dataclasses.replace(identity, hair_volume=-0.04), long=False)
        _fill(canvas, camera(skull), skin * 0.95)
    else:
        _fill(canvas, hair_outline, hair)

    if attrs["Wearing_Earrings"]:  # in front of the hair, behind the face
        for side_index, side in ((RIGHT_FACE_SIDE, -1.0), (LEFT_FACE_SIDE, 1.0)):
            lobe = camera(neutral[side_index][None] + np.array([[side * 0.03, 0.14, 0.15]]))[0]
            cv2.circle(canvas, tuple(_pts(lobe)), int(0.03 * big * (1 << _SHIFT)),
                       (235, 200, 80), -1, cv2.LINE_AA, _SHIFT)  # fmt: skip

    # The face mesh: triangles far to near, shaded by their normals.
    triangles = mesh_triangles()
    corners = posed[triangles]  # (K, 3, 3)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals *= -np.sign(normals[:, 2:3] + 1e-12)  # face the camera (towards -z)
    # Smooth (per-vertex) normals: the template's small bumps would otherwise show as blotches.
    vertex_normals = np.zeros((468, 3))
    for corner in range(3):
        np.add.at(vertex_normals, triangles[:, corner], normals)
    vertex_normals /= np.linalg.norm(vertex_normals, axis=1, keepdims=True) + 1e-12
    light = np.asarray(identity.light, np.float64)
    light /= np.linalg.norm(light)
    shade = (0.45 + 0.6 * np.clip(vertex_normals @ light, 0, 1))[triangles].mean(axis=1)
    order = np.argsort(-corners[:, :, 2].mean(axis=1))
    colours = np.clip(shade[:, None] * skin[None], 0, 255)
    fixed = _pts(corners)
    for k in order:
        cv2.fillConvexPoly(canvas, fixed[k], tuple(map(float, colours[k])), cv2.LINE_8, _SHIFT)

    shape = (big, big)
    face_mask = _mask(shape, [posed[FACE_OVAL]])
    if attrs["Rosy_Cheeks"]:
        cheeks = np.zeros(shape, np.float32)
        for index in (RIGHT_CHEEK, LEFT_CHEEK):
            cv2.circle(cheeks, tuple(_pts(posed[index])), int(0.07 * big * (1 << _SHIFT)), 1.0, -1,
                       cv2.LINE_AA, _SHIFT)  # fmt: skip
        _blend(canvas, cv2.GaussianBlur(cheeks, (0, 0), 0.03 * big) * face_mask, (230, 70, 80), 0.55)
    if attrs["5_o_Clock_Shadow"] or attrs["Goatee"] or attrs["Mustache"]:
        pass  # drawn after the mouth
    if not attrs["Young"]:
        _wrinkles(canvas, mesh, camera, skin, big)

    _eyes(canvas, mesh, posed, camera, identity, big)
    _brows(canvas, mesh, camera, identity, hair, big)
    for index in (RIGHT_NOSTRIL, LEFT_NOSTRIL):
        cv2.ellipse(canvas, tuple(_pts(posed[index])), (int(0.012 * big * 16), int(0.007 * big * 16)),
                    0, 0, 360, tuple(map(float, skin * 0.45)), -1, cv2.LINE_AA, _SHIFT)  # fmt: skip
    _mouth(canvas, posed, identity, skin, big)
    _beard(canvas, mesh, camera, identity, hair, face_mask, rng, big)
    if attrs["Bangs"]:
        _bangs(canvas, mesh, camera, hair, big)
    if attrs["Eyeglasses"]:
        _glasses(canvas, mesh, camera, identity, big)

    image = cv2.resize(np.clip(canvas, 0, 255), (size, size), interpolation=cv2.INTER_AREA)
    image = np.round(image).astype(np.uint8)
    landmarks = camera(mesh)
    landmarks[:, 2] -= camera(_HEAD_CENTRE[None])[0, 2]
    landmarks /= big
    return image, landmarks.astype(np.float32)


def _eyes(canvas, mesh, posed, camera, identity: Identity, big: int) -> None:
    attrs = identity.attributes
    eyes = ((RIGHT_EYE, RIGHT_IRIS, RIGHT_EYE_UPPER), (LEFT_EYE, LEFT_IRIS, LEFT_EYE_UPPER))
    for contour, iris, upper in eyes:
        outline = posed[contour]
        if attrs["Heavy_Makeup"]:
            lid = mesh[[contour[0], *upper, contour[8]]]
            arch = np.sin(np.linspace(0.3, np.pi - 0.3, len(lid)))[:, None]
            raised = lid + np.array([0.0, -0.045, 0.0]) * arch
            shadow = _mask(canvas.shape[:2], [camera(np.concatenate([lid, raised[::-1]]))], blur=0.006 * big)
            _blend(canvas, shadow, identity.eyeshadow, 0.6)
        white = _mask(canvas.shape[:2], [outline])
        _blend(canvas, white, (238, 236, 232), 1.0)
        centre = posed[iris[0]]
        radius = np.linalg.norm(posed[iris[1:], :2] - centre[:2], axis=1).mean()
        disc = np.zeros(canvas.shape[:2], np.float32)
        cv2.circle(disc, tuple(_pts(centre)), int(radius * 16), 1.0, -1, cv2.LINE_AA, _SHIFT)
        _blend(canvas, disc * white, identity.eye_colour, 1.0)
        pupil = np.zeros_like(disc)
        cv2.circle(pupil, tuple(_pts(centre)), int(radius * 0.45 * 16), 1.0, -1, cv2.LINE_AA, _SHIFT)
        _blend(canvas, pupil * white, (10, 10, 12), 1.0)
        lid_line = posed[[contour[0], *upper, contour[8]]]
        thickness = (0.012 if attrs["Heavy_Makeup"] else 0.006) * big
        _polyline(canvas, lid_line, (25, 20, 20), thickness)
        _polyline(canvas, outline, (90, 60, 55), 0.003 * big, closed=True)


def _brows(canvas, mesh, camera, identity: Identity, hair, big: int) -> None:
    colour = np.asarray(hair) * 0.7 if identity.hair_colour_name != "Blond_Hair" else np.asarray(hair) * 0.6
    for upper, lower in ((RIGHT_BROW_UPPER, RIGHT_BROW_LOWER), (LEFT_BROW_UPPER, LEFT_BROW_LOWER)):
        top, bottom = mesh[upper].copy(), mesh[lower]
        # Brow thickness: move the upper edge away from the lower one; the inner end stays thicker.
        top = bottom + (top - bottom) * identity.brow_thickness * np.linspace(0.7, 1.0, len(top))[::-1, None]
        _fill(canvas, camera(np.concatenate([top, bottom[::-1]])), colour)


def _mouth(canvas, posed, identity: Identity, skin, big: int) -> None:
    attrs = identity.attributes
    inner = posed[MOUTH_INNER]
    gap = posed[LIPS_INNER_LOWER[1:-1], 1] - posed[LIPS_INNER_UPPER[1:-1], 1]
    if gap.max() > 0.004 * big:
        cavity = _mask(canvas.shape[:2], [inner])
        _blend(canvas, cavity, (70, 22, 28), 1.0)
        teeth = posed[LIPS_INNER_UPPER].copy()
        lowered = teeth.copy()
        lowered[:, 1] += 0.025 * big
        teeth_mask = _mask(canvas.shape[:2], [np.concatenate([teeth, lowered[::-1]])]) * cavity
        _blend(canvas, teeth_mask, (236, 232, 220), 1.0)
    natural = np.clip(skin * np.array([0.92, 0.62, 0.62]) + np.array([15, 0, 5]), 0, 255)
    colour = np.asarray(identity.lipstick) if attrs["Wearing_Lipstick"] else natural
    upper = np.concatenate([posed[LIPS_OUTER_UPPER], posed[LIPS_INNER_UPPER][::-1]])
    lower = np.concatenate([posed[LIPS_OUTER_LOWER], posed[LIPS_INNER_LOWER][::-1]])
    _fill(canvas, upper, colour * 0.88)
    _fill(canvas, lower, colour)
    _polyline(canvas, posed[LIPS_INNER_UPPER], colour * 0.55, 0.004 * big)


def _wrinkles(canvas, mesh, camera, skin, big: int) -> None:
    colour = skin * 0.72
    brow_y = mesh[RIGHT_BROW_UPPER + LEFT_BROW_UPPER, 1].min()
    for k in range(3):  # forehead lines
        y = brow_y - 0.05 - 0.035 * k
        a, b = np.array([-0.16, y, -0.1]), np.array([0.16, y, -0.1])
        _polyline(canvas, camera(_arc(a, b, np.array([0.0, y - 0.02, -0.12]))), colour, 0.006 * big)
    for wing, corner, side in ((129, 61, -1.0), (358, 291, 1.0)):  # nasolabial folds
        a, b = mesh[wing] + [side * 0.01, 0, 0], mesh[corner] + [side * 0.03, 0.02, 0]
        _polyline(canvas, camera(_arc(a, b, 0.5 * (a + b) + [side * 0.04, 0, 0])), colour, 0.007 * big)
    for lower in (RIGHT_EYE_LOWER, LEFT_EYE_LOWER):  # bags under the eyes
        line = mesh[lower] + np.array([0.0, 0.03, 0.0])
        _polyline(canvas, camera(line), skin * 0.78, 0.006 * big)


def _beard(canvas, mesh, camera, identity: Identity, hair, face_mask, rng, big: int) -> None:
    attrs = identity.attributes
    colour = np.asarray(hair) * 0.8
    shape = canvas.shape[:2]
    if attrs["5_o_Clock_Shadow"]:
        jaw = mesh[[132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]]
        cheek_line = mesh[[361, 291, 0, 61, 132]] + np.array([0.0, 0.02, 0.0])
        stubble = _mask(shape, [camera(np.concatenate([jaw, cheek_line[1:-1]]))], blur=0.008 * big)
        grain = np.random.default_rng(rng.integers(2**31)).random(shape).astype(np.float32)
        _blend(canvas, stubble * face_mask * (0.5 + 0.5 * grain), (40, 35, 35), 0.45)
    if attrs["Mustache"]:
        lip = mesh[LIPS_OUTER_UPPER]
        top = lip + np.array([0.0, -0.05, -0.01])
        top[[0, -1]] += np.array([[-0.015, 0.04, 0.0], [0.015, 0.04, 0.0]])
        _fill(canvas, camera(np.concatenate([lip + [0, 0.008, -0.01], top[::-1]])), colour)
    if attrs["Goatee"]:
        lip = mesh[[91, 181, 84, 17, 314, 405, 321]] + np.array([0.0, 0.012, -0.01])
        chin = mesh[[377, 152, 148]] + np.array([0.0, 0.02, 0.0])
        _fill(canvas, camera(np.concatenate([lip, chin])), colour)


def _bangs(canvas, mesh, camera, hair, big: int) -> None:
    top = mesh[[389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162]] + np.array([0.0, -0.03, -0.02])
    brows = mesh[[300, 293, 334, 296, 336, 9, 107, 66, 105, 63, 70]] + np.array([0.0, -0.035, -0.02])
    _fill(canvas, camera(np.concatenate([top, brows])), hair)
    for x in np.linspace(-0.18, 0.18, 7):  # strands
        a = np.array([x * 0.6, mesh[10, 1] - 0.02, -0.1])
        b = np.array([x, brows[:, 1].mean(), -0.1])
        _polyline(canvas, camera(np.stack([a, b])), np.asarray(hair) * 0.75, 0.005 * big)


def _glasses(canvas, mesh, camera, identity: Identity, big: int) -> None:
    colour = identity.glasses_colour
    thickness = 0.014 * big
    rings = []
    for contour in (RIGHT_EYE, LEFT_EYE):
        centre = mesh[contour].mean(axis=0) + np.array([0.0, 0.0, -0.06])
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ring = centre + np.stack([0.11 * np.cos(angles), 0.085 * np.sin(angles), 0 * angles], 1)
        rings.append(ring)
        posed = camera(ring)
        lens = _mask(canvas.shape[:2], [posed])
        _blend(canvas, lens, (200, 220, 235), 0.18)
        _polyline(canvas, posed, colour, thickness, closed=True)
    right, left = rings
    bridge = np.stack([right[0], 0.5 * (right[0] + left[12]) + [0, -0.015, -0.02], left[12]])
    _polyline(canvas, camera(bridge), colour, thickness)
    for ring, side_index in ((right, RIGHT_FACE_SIDE), (left, LEFT_FACE_SIDE)):
        outer = ring[12] if ring is right else ring[0]
        _polyline(canvas, camera(np.stack([outer, mesh[side_index] + [0, -0.04, 0]])), colour, thickness)
