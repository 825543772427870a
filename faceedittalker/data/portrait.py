"""The reference portrait of Alg. 4: reading any image file, finding the one face, cropping it exactly as the
preprocessing crops training clips, and pasting generated faces back into the full portrait.

- `load_portrait`: any size and mode (grey, RGBA, palette, 16-bit, CMYK), EXIF orientation applied. Transparent
  pixels are composited on white (a cut-out portrait then looks like a studio shot; black would read as hair).
- `find_face`: the Face Landmarker in image mode on a copy downscaled to `detect_max_side`, as preprocessing does
  per frame; the crop square comes from `preprocess.crop_boxes` with the preprocessing settings, the crop itself
  from `preprocess.crop_frame`, the crop-frame landmarks from `preprocess.landmarks_to_crop`, so a portrait is
  cropped like a one-frame clip. MediaPipe's face detector sees a 128 px copy of its input, so a face that fills
  less than ~15% of a large or wide image (an off-centre head in a 3000 x 2000 photo, two people side by side) is
  missed on the whole image; then overlapping tiles are searched, coarse to fine, and each face found there is
  re-detected in a square around it (the face then fills half the input) before its landmarks are used.
  Faces whose landmark box (larger side, portrait pixels) is under `min_face_px` (default 64, the preprocessing's
  `min_face_size`: no training clip has a smaller face) are refused.
- `PasteBack` / `paste_back`: the generated (R, R) face is warped back with the inverse of the crop's mapping and
  blended with a mask that is 1 over the face (convex hull of the reference landmarks) and falls smoothly to 0
  over `feather` x crop side around it, and also within that distance of the crop square's edge, so nothing
  outside the square changes and there is no seam. The mask is built once; each frame costs one warp of the
  crop square and one blend.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceedittalker.data.preprocess import (
    PreprocessSettings,
    crop_boxes,
    crop_frame,
    detection_copy,
    face_box,
    landmarks_to_crop,
)
from faceedittalker.errors import InputError
from faceedittalker.landmarks.detector import FaceLandmarker, FaceLandmarks

BACKGROUND_RGB = (255, 255, 255)  # what transparent pixels become
MAX_FACES = 8  # the landmarker looks for up to this many faces, so that "several faces" is seen and counted
DEFAULT_MIN_FACE_PX = PreprocessSettings().min_face_size


# ---------------------------------------------------------------------------------------------------------------
# Reading


def load_portrait(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, upright (EXIF orientation applied); the first frame of animations.

    Grey, palette, RGBA/LA (composited on white), 16-bit and 32-bit integer, float and CMYK images all work. A
    missing file, a folder, a file that is not an image, a format Pillow cannot read and a corrupt or truncated
    image are each an `InputError` naming the file and the problem.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"portrait not found: {path}")
    if not path.is_file():
        raise InputError(f"portrait is not a file: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: truncated or corrupt data fails here, not later
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError as err:
        raise InputError(
            f"cannot read portrait {path}: not an image, or a format Pillow cannot read (use PNG, JPEG, WebP, "
            "BMP or TIFF)"
        ) from err
    except Image.DecompressionBombError as err:
        raise InputError(f"cannot read portrait {path}: too many pixels ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot read portrait {path}: corrupt or truncated image ({reason})") from err


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Pillow's convert("RGB") clips these to 0..255 instead of rescaling, which would saturate a 16-bit image.
        values = np.asarray(image).astype(np.float64)
        if mode == "F":
            top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if mode in ("L", "1") and "transparency" in image.info:
        has_alpha = True
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------------------------
# Finding and cropping the face


@dataclass
class FaceCrop:
    """Where the face of a portrait is and how it is cropped.

    `box` is the crop square in whole portrait pixels, (x0, y0, x1, y1) with x1 - x0 == y1 - y0: the smallest
    such square holding `crop_box`; it may extend beyond the image. `crop_box` is the exact (sub-pixel) square
    (x0, y0, side) that `crop_frame` and the paste-back use, as in a clip's `meta.json` `crop_boxes`.
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray  # (478, 3) float32, normalised to the crop square (as a clip's landmarks.npy)
    portrait_size: tuple[int, int]  # (H, W)
    crop_box: np.ndarray  # (3,) float64: x0, y0, side in portrait pixels
    face_box: np.ndarray  # (4,) float64: landmark bounding box x0, y0, x1, y1 in portrait pixels
    points: np.ndarray = field(repr=False)  # (478, 3) float32, normalised to the portrait (MediaPipe convention)
    num_faces: int = 1  # faces seen in the portrait

    @property
    def face_size(self) -> float:
        """The larger side of the landmark box in portrait pixels (what `min_face_px` is compared with)."""
        return float(max(self.face_box[2] - self.face_box[0], self.face_box[3] - self.face_box[1]))


def find_face(
    image: np.ndarray,
    face: str = "only",
    min_face_px: float = DEFAULT_MIN_FACE_PX,
    landmarker: FaceLandmarker | None = None,
    settings: PreprocessSettings | None = None,
    source: str = "the portrait",
) -> FaceCrop:
    """The face of an RGB portrait and its crop, built as preprocessing builds a clip's crop.

    `face="only"` requires exactly one face; `face="largest"` takes the largest of several. `landmarker` (image
    mode, `num_faces >= 2`) may be passed to reuse one; `settings` gives the crop scale, shift and detection size
    (default: the preprocessing defaults, i.e. the training clips'). `source` names the portrait in errors.
    """
    if face not in ("only", "largest"):
        raise InputError(f"face must be 'only' or 'largest', got {face!r}")
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected an (H, W, 3) uint8 RGB portrait, got {image.dtype} {tuple(image.shape)}")
    settings = settings or PreprocessSettings()
    if landmarker is None:
        with FaceLandmarker(settings.model_path, mode="image", num_faces=MAX_FACES) as own:
            faces = detect_faces(image, own, settings.detect_max_side)
    else:
        if landmarker.mode != "image":
            raise ValueError("find_face needs a FaceLandmarker in image mode")
        faces = detect_faces(image, landmarker, settings.detect_max_side)
    height, width = image.shape[:2]
    if not faces:
        raise InputError(f"no face found in {source} ({width} x {height} px)")
    boxes = [face_box(f.points, width, height) for f in faces]
    sizes = [max(b[2] - b[0], b[3] - b[1]) for b in boxes]
    if len(faces) > 1 and face == "only":
        raise InputError(
            f"{len(faces)} faces found in {source}; give a portrait with one face, or face=largest to use the "
            "largest one"
        )
    chosen = int(np.argmax(sizes))
    if sizes[chosen] < min_face_px:
        raise InputError(
            f"face too small in {source}: {sizes[chosen]:.0f} px (at least {min_face_px:.0f} px needed; use a "
            "larger or closer portrait)"
        )
    points = faces[chosen].points
    crop_box = crop_boxes(boxes[chosen][None], settings)[0]
    return FaceCrop(
        box=_enclosing_square(crop_box),
        landmarks=landmarks_to_crop(points, crop_box, width, height),
        portrait_size=(height, width),
        crop_box=crop_box,
        face_box=boxes[chosen],
        points=points,
        num_faces=len(faces),
    )


def crop_face(image: np.ndarray, crop: FaceCrop, resolution: int) -> np.ndarray:
    """The (resolution, resolution, 3) uint8 face crop; outside the image is black, as in preprocessing."""
    _check_portrait_size(image, crop)
    return crop_frame(image, crop.crop_box, resolution)


def detect_faces(image: np.ndarray, landmarker: FaceLandmarker, detect_max_side: int = 720) -> list[FaceLandmarks]:
    """Every face in an RGB image, landmarks normalised to the whole image.

    First the whole image downscaled to `detect_max_side` (as preprocessing does per frame); if that finds no
    face, overlapping square tiles from the image's short side down to a quarter of it, coarse to fine, stopping
    at the first tile size that finds one; each face found in a tile is re-detected in a square around it, and
    duplicates (the same face in several tiles) are merged.
    """
    height, width = image.shape[:2]
    faces = landmarker.detect_all(detection_copy(image, detect_max_side))
    if faces:
        return faces
    short = min(height, width)
    for tile in (short, short // 2, short // 4):
        if tile < 64:
            break
        found = []
        for x0, y0 in _tile_origins(width, height, tile):
            region = np.array([x0, y0, tile], dtype=np.float64)
            window = detection_copy(image[y0 : y0 + tile, x0 : x0 + tile], detect_max_side)
            found += [_to_image_frame(f, region, width, height) for f in landmarker.detect_all(window)]
        if found:
            refined = [_refine(image, f, landmarker, detect_max_side) for f in _merge(found, width, height)]
            return _merge([f for f in refined if f is not None], width, height)
    return []


def _tile_origins(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of `tile`-sided squares covering the image with half-tile overlap."""
    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        count = math.ceil((length - tile) / (tile / 2)) + 1
        return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})

    return [(x, y) for y in starts(height) for x in starts(width)]


def _to_image_frame(face: FaceLandmarks, region: np.ndarray, width: int, height: int) -> FaceLandmarks:
    """Landmarks normalised to the square `region` (x0, y0, side) -> normalised to the whole image."""
    x0, y0, side = region
    points = face.points.astype(np.float64)
    whole = np.stack(
        [(x0 + points[:, 0] * side) / width, (y0 + points[:, 1] * side) / height, points[:, 2] * side / width],
        axis=1,
    )
    return FaceLandmarks(whole.astype(np.float32), face.matrix, face.blendshapes)


def _refine(image: np.ndarray, face: FaceLandmarks, landmarker: FaceLandmarker, detect_max_side: int):
    """Re-detect a face in a square 1.5 x its crop side around it (the face then fills about a third of the
    landmarker's input, its best range); None when it is not found again (a false detection in a tile)."""
    height, width = image.shape[:2]
    rough = face_box(face.points, width, height)
    x0, y0, side = crop_boxes(rough[None], PreprocessSettings())[0]
    side_out = 1.5 * side
    region = np.array([x0 - (side_out - side) / 2, y0 - (side_out - side) / 2, side_out])
    size = int(min(detect_max_side, round(side_out)))
    window = crop_frame(image, region, size)
    candidates = [_to_image_frame(f, region, width, height) for f in landmarker.detect_all(window)]
    best, best_overlap = None, 0.3
    for candidate in candidates:
        overlap = _iou(face_box(candidate.points, width, height), rough)
        if overlap > best_overlap:
            best, best_overlap = candidate, overlap
    return best


def _merge(faces: list[FaceLandmarks], width: int, height: int) -> list[FaceLandmarks]:
    """One face per person: of faces whose boxes overlap (IoU > 0.3) the largest is kept."""
    boxes = [face_box(f.points, width, height) for f in faces]
    order = sorted(range(len(faces)), key=lambda i: -_area(boxes[i]))
    kept: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= 0.3 for j in kept):
            kept.append(i)
    return [faces[i] for i in kept]


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inner = np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])])
    intersection = _area(inner)
    union = _area(a) + _area(b) - intersection
    return intersection / union if union > 0 else 0.0


def _enclosing_square(crop_box: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0, side = (float(v) for v in crop_box)
    left, top = math.floor(x0), math.floor(y0)
    extent = max(math.ceil(x0 + side) - left, math.ceil(y0 + side) - top)
    return left, top, left + extent, top + extent


def _check_portrait_size(image: np.ndarray, crop: FaceCrop) -> None:
    if tuple(image.shape[:2]) != tuple(crop.portrait_size):
        raise ValueError(f"portrait is {image.shape[:2]}, the crop was found on {crop.portrait_size}")


# ---------------------------------------------------------------------------------------------------------------
# Pasting back


class PasteBack:
    """Blends generated faces (R, R, 3) uint8 into copies of the portrait; the mask is built once.

    `region="face"` (default) replaces the face (convex hull of the reference landmarks) and fades out over
    `feather` x crop side around it, keeping the portrait's own hair and background; `region="box"` replaces the
    whole crop square but for a faded rim of that width (for heads that move a lot). Either way the weight is 0 at
    and outside the crop square's edge.
    """

    def __init__(self, portrait: np.ndarray, crop: FaceCrop, feather: float = 0.1, region: str = "face"):
        _check_portrait_size(portrait, crop)
        if region not in ("face", "box"):
            raise ValueError(f"region must be 'face' or 'box', got {region!r}")
        if not 0.0 < feather <= 0.5:
            raise ValueError(f"feather must be in (0, 0.5], got {feather}")
        self.portrait = np.ascontiguousarray(portrait)
        self.crop = crop
        height, width = portrait.shape[:2]
        x0, y0, x1, y1 = crop.box
        # The part of the crop square inside the image: the only pixels that can change.
        self.left, self.top = max(0, x0), max(0, y0)
        self.right, self.bottom = min(width, x1), min(height, y1)
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError("the crop square does not overlap the portrait")
        self.mask = self._build_mask(feather, region)  # (h, w, 1) float32 in [0, 1]
        self._background = self.portrait[self.top : self.bottom, self.left : self.right].astype(np.float32)
        self._warps: dict[int, np.ndarray] = {}

    def _build_mask(self, feather: float, region: str) -> np.ndarray:
        cx0, cy0, side = (float(v) for v in self.crop.crop_box)
        fade = max(1.0, feather * side)  # pixels over which the weight goes from 0 to 1
        ys = np.arange(self.top, self.bottom, dtype=np.float64) + 0.5
        xs = np.arange(self.left, self.right, dtype=np.float64) + 0.5
        # Distance of each pixel centre to the nearest edge of the exact crop square (negative outside it).
        to_edge = np.minimum(
            np.minimum(xs - cx0, cx0 + side - xs)[None, :], np.minimum(ys - cy0, cy0 + side - ys)[:, None]
        )
        weight = _smoothstep(to_edge / fade)
        if region == "face":
            hull = cv2.convexHull(self._landmark_pixels().astype(np.float32))
            inside = np.zeros(weight.shape, np.uint8)
            # Sub-pixel polygon (4 fractional bits), then the distance of every outside pixel to the face.
            cv2.fillPoly(inside, [np.round(hull * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            outside_distance = cv2.distanceTransform((1 - inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)
            weight = np.minimum(weight, _smoothstep(1.0 - outside_distance / fade))
        return weight.astype(np.float32)[:, :, None]

    def _landmark_pixels(self) -> np.ndarray:
        """The reference landmarks in the coordinates of the pasted region (pixels, x and y)."""
        cx0, cy0, side = (float(v) for v in self.crop.crop_box)
        xy = self.crop.landmarks[:, :2].astype(np.float64) * side + (cx0, cy0)
        return xy - (self.left, self.top) - 0.5  # continuous -> pixel-centre coordinates

    def _warp(self, face: np.ndarray) -> np.ndarray:
        """The generated crop resampled onto the pasted region (inverse of `crop_frame`'s mapping)."""
        resolution = face.shape[0]
        cx0, cy0, side = (float(v) for v in self.crop.crop_box)
        scale = resolution / side  # crop pixels per portrait pixel
        if scale > 2.0:
            # Shrinking a lot: area-average first, as crop_frame does the other way round.
            factor = int(scale)
            face = cv2.resize(face, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
            scale /= factor
        # Portrait continuous coordinate X = x0 + (c + 0.5) / scale for crop pixel c (pixel centres: -0.5).
        affine = self._warps.get(face.shape[0])
        if affine is None:
            affine = np.array(
                [
                    [1 / scale, 0, cx0 + 0.5 / scale - 0.5 - self.left],
                    [0, 1 / scale, cy0 + 0.5 / scale - 0.5 - self.top],
                ]
            )
            self._warps[face.shape[0]] = affine
        size = (self.right - self.left, self.bottom - self.top)
        return cv2.warpAffine(face, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def __call__(self, face: np.ndarray) -> np.ndarray:
        """A copy of the portrait with `face` ((R, R, 3) uint8, the crop as `crop_face` gives it) blended in."""
        face = np.asarray(face)
        if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1]:
            raise ValueError(f"expected a square (R, R, 3) uint8 face, got {face.dtype} {tuple(face.shape)}")
        warped = self._warp(np.ascontiguousarray(face)).astype(np.float32)
        blended = self._background + self.mask * (warped - self._background)
        frame = self.portrait.copy()
        frame[self.top : self.bottom, self.left : self.right] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
        return frame


def paste_back(
    portrait: np.ndarray, face: np.ndarray, crop: FaceCrop, feather: float = 0.1, region: str = "face"
) -> np.ndarray:
    """One generated face blended into a copy of the portrait (see `PasteBack`; build one for many frames)."""
    return PasteBack(portrait, crop, feather=feather, region=region)(face)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, 3t^2 - 2t^3 between: a weight with continuous slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
