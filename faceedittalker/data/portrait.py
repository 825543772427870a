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
    num_faces: int = 1  # faces of at least min_face_px seen in the portrait

    @property
    def face_size(self) -> float:
        """The larger side of the landmark box in portrait pixels (what `min_face_px` is compared with)."""
        return _box_side(self.face_box)


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
            found = _detect_faces(image, own, settings.detect_max_side, min_face_px)
    else:
        if landmarker.mode != "image":
            raise ValueError("find_face needs a FaceLandmarker in image mode")
        found = _detect_faces(image, landmarker, settings.detect_max_side, min_face_px)
    height, width = image.shape[:2]
    if not found:
        raise InputError(f"no face found in {source} ({width} x {height} px)")
    sizes = [_box_side(face_box(face.points, width, height)) for face, _ in found]
    largest = int(np.argmax(sizes))
    if sizes[largest] < min_face_px:
        raise InputError(
            f"face too small in {source}: {sizes[largest]:.0f} px (at least {min_face_px:.0f} px needed; use a "
            "larger or closer portrait)"
        )
    usable = sum(size >= min_face_px for size in sizes)  # far-away faces in the background do not count
    if usable > 1 and face == "only":
        raise InputError(
            f"{usable} faces found in {source}; give a portrait with one face, or face=largest to use the largest one"
        )
    points = _track_still(image, found[largest][0], found[largest][1], settings)
    chosen_box = face_box(points, width, height)
    crop_box = crop_boxes(chosen_box[None], settings)[0]
    return FaceCrop(
        box=_enclosing_square(crop_box),
        landmarks=landmarks_to_crop(points, crop_box, width, height),
        portrait_size=(height, width),
        crop_box=crop_box,
        face_box=chosen_box,
        points=points,
        num_faces=usable,
    )


def crop_face(image: np.ndarray, crop: FaceCrop, resolution: int) -> np.ndarray:
    """The (resolution, resolution, 3) uint8 face crop; outside the image is black, as in preprocessing."""
    _check_portrait_size(image, crop)
    return crop_frame(image, crop.crop_box, resolution)


def detect_faces(
    image: np.ndarray, landmarker: FaceLandmarker, detect_max_side: int = 720, min_face_px: float = DEFAULT_MIN_FACE_PX
) -> list[FaceLandmarks]:
    """Every face in an RGB image with a landmark box of at least about `min_face_px` (image-mode landmarks,
    normalised to the whole image).

    The whole image downscaled to `detect_max_side` (as preprocessing does per frame), then overlapping square
    tiles (half-tile overlap) from the image's short side down to 4 x `min_face_px`, halving: the face detector
    sees a 128 px copy of its input and misses faces under ~15% of it, so a second, smaller face (or the only face
    of a large photo) is found in the tiles. Each face found in a tile is re-detected in a square around it (which
    also drops most false detections), and the same face seen several times is kept once, preferring its
    whole-image landmarks.
    """
    return [face for face, _ in _detect_faces(image, landmarker, detect_max_side, min_face_px)]


TILE_DETECT_SIDE = 384  # tiles are downscaled to this for detection (the detector itself looks at 128 px)


def _detect_faces(image: np.ndarray, landmarker: FaceLandmarker, detect_max_side: int, min_face_px: float):
    """`detect_faces` as (face, found on the whole image) pairs."""
    height, width = image.shape[:2]
    found = [(face, True) for face in landmarker.detect_all(detection_copy(image, detect_max_side))]
    tile = min(height, width)
    while tile >= max(4 * min_face_px, 64):
        origins = _tile_origins(width, height, tile)
        if len(origins) > 1 or (tile, tile) != (width, height):  # a single whole-image tile adds nothing
            for x0, y0 in origins:
                region = np.array([x0, y0, tile], dtype=np.float64)
                window = detection_copy(image[y0 : y0 + tile, x0 : x0 + tile], TILE_DETECT_SIDE)
                for face in landmarker.detect_all(window):
                    found.append((_to_image_frame(face, region, width, height), False))
        tile //= 2
    whole = [pair for pair in found if pair[1]]
    seen_in_tiles = _merge([pair for pair in found if not pair[1]], width, height)
    # Tile faces already seen on the whole image need no second look; the others are re-detected.
    whole_boxes = [face_box(face.points, width, height) for face, _ in whole]
    new = [
        pair
        for pair in seen_in_tiles
        if all(_iou(face_box(pair[0].points, width, height), box) <= 0.3 for box in whole_boxes)
    ]
    refined = [(_refine(image, face, landmarker, detect_max_side), False) for face, _ in new]
    return _merge(whole + [pair for pair in refined if pair[0] is not None], width, height)


def _track_still(image: np.ndarray, face: FaceLandmarks, on_whole_image: bool, settings: PreprocessSettings,
                 max_frames: int = 12) -> np.ndarray:
    """The landmarks a clip of this still image would get in preprocessing: there the landmarker runs in video
    mode with one face, i.e. it tracks, and on a steady face the tracked landmarks settle (within ~6 frames) a
    little away from the detection-seeded ones of image mode (the crop side ~2% larger on the astronaut). So the
    chosen face is tracked over repeats of the same picture until its landmark box stops moving.

    The tracker sees a square around the face cut from the very pixels preprocessing would give it (the detection
    copy, whole-pixel aligned, so no resampling); faces found in tiles are small there, so for them the square is
    taken from the full image at up to `detect_max_side` pixels. If tracking drifts to another face, the
    image-mode landmarks are kept.
    """
    height, width = image.shape[:2]
    rough = face_box(face.points, width, height)
    x0, y0, side = crop_boxes(rough[None], settings)[0]
    grow = 0.5 * side  # the window: 2x the crop side, centred on the crop
    if on_whole_image:
        frame = detection_copy(image, settings.detect_max_side)
        scale = frame.shape[1] / width
        left, top = math.floor((x0 - grow) * scale), math.floor((y0 - grow) * scale)
        extent = math.ceil((side + 2 * grow) * scale)
        window_box = np.array([left, top, extent], dtype=np.float64)
        window = crop_frame(frame, window_box, extent)  # an exact cut (scale 1, whole-pixel offsets), padded black
        frame_height, frame_width = frame.shape[:2]
    else:
        window_box = np.array([x0 - grow, y0 - grow, side + 2 * grow])
        window = crop_frame(image, window_box, int(min(settings.detect_max_side, round(window_box[2]))))
        frame_height, frame_width = height, width
    points, previous = face.points, None
    with FaceLandmarker(settings.model_path, mode="video", num_faces=1) as tracker:
        for index in range(max_frames):
            found = tracker.detect_video_frame(window, timestamp_ms=index * 40)
            if found is None:
                break
            tracked = _to_image_frame(found, window_box, frame_width, frame_height)
            box = face_box(tracked.points, width, height)
            if _iou(box, rough) < 0.5:  # locked on to something else
                break
            points = tracked.points
            if previous is not None and np.abs(box - previous).max() < 0.02:
                break
            previous = box
    return points


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


def _merge(faces: list[tuple[FaceLandmarks, bool]], width: int, height: int) -> list[tuple[FaceLandmarks, bool]]:
    """One entry per person: of (face, on whole image) pairs whose boxes overlap (IoU > 0.3), the one found on
    the whole image, else the largest, is kept (in that order of preference)."""
    boxes = [face_box(face.points, width, height) for face, _ in faces]
    order = sorted(range(len(faces)), key=lambda i: (not faces[i][1], -_area(boxes[i])))
    kept: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[j]) <= 0.3 for j in kept):
            kept.append(i)
    return [faces[i] for i in sorted(kept, key=order.index)]


def _box_side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


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
    and outside the crop square's edge. `landmarks` ((T, 478, 3) or (478, 3), crop frame), e.g. the sequence the
    generated frames follow, widens the face region to cover all of them (an open jaw, a turned head); default:
    the reference landmarks `crop.landmarks`.
    """

    def __init__(
        self,
        portrait: np.ndarray,
        crop: FaceCrop,
        feather: float = 0.1,
        region: str = "face",
        landmarks: np.ndarray | None = None,
    ):
        _check_portrait_size(portrait, crop)
        if region not in ("face", "box"):
            raise ValueError(f"region must be 'face' or 'box', got {region!r}")
        if not 0.0 < feather <= 0.5:
            raise ValueError(f"feather must be in (0, 0.5], got {feather}")
        self.portrait = np.ascontiguousarray(portrait)
        self.crop = crop
        self.landmarks = crop.landmarks if landmarks is None else np.asarray(landmarks, dtype=np.float32)
        if self.landmarks.shape[-2:] != (478, 3):
            raise ValueError(f"landmarks must be (..., 478, 3), got {self.landmarks.shape}")
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
        """All landmark points (x, y) in the pixel coordinates of the pasted region."""
        cx0, cy0, side = (float(v) for v in self.crop.crop_box)
        xy = self.landmarks[..., :2].reshape(-1, 2).astype(np.float64) * side + (cx0, cy0)
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
    portrait: np.ndarray,
    face: np.ndarray,
    crop: FaceCrop,
    feather: float = 0.1,
    region: str = "face",
    landmarks: np.ndarray | None = None,
) -> np.ndarray:
    """One generated face blended into a copy of the portrait (see `PasteBack`; build one for many frames)."""
    return PasteBack(portrait, crop, feather=feather, region=region, landmarks=landmarks)(face)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, 3t^2 - 2t^3 between: a weight with continuous slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
