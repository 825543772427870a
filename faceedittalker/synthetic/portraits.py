"""Real face crops that ship offline: the scikit-image astronaut portrait (NASA, public domain) and the
LFW subset bundled with scikit-image. Used by the reconstruction check, tests and tiny smoke runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faceedittalker.utils.files import COMPLETE_MARKER, ensure_directory

# The astronaut's face in `skimage.data.astronaut()` (512 x 512): a square box (top, left, side).
ASTRONAUT_FACE_BOX = (20, 130, 220)


def astronaut_face_crops(count: int, resolution: int, seed: int = 0, jitter: float = 0.06) -> np.ndarray:
    """`count` crops of the astronaut's face with small random shifts and zooms -> (N, R, R, 3) uint8."""
    from skimage.data import astronaut

    image = Image.fromarray(astronaut())
    rng = np.random.default_rng(seed)
    top, left, side = ASTRONAUT_FACE_BOX
    crops = []
    for i in range(count):
        dy, dx, zoom = (0.0, 0.0, 1.0) if i == 0 else (*rng.uniform(-jitter, jitter, 2) * side,
                                                      1 + rng.uniform(-jitter, jitter))
        s = side * zoom
        y, x = top + dy + (side - s) / 2, left + dx + (side - s) / 2
        crop = image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=(x, y, x + s, y + s))
        crops.append(np.asarray(crop))
    return np.stack(crops)


def lfw_faces(count: int, resolution: int) -> np.ndarray:
    """The first `count` faces of scikit-image's LFW subset (25 x 25 grey), as RGB (N, R, R, 3) uint8."""
    from skimage.data import lfw_subset

    if count <= 0:
        return np.zeros((0, resolution, resolution, 3), dtype=np.uint8)
    faces = lfw_subset()[:count]  # (N, 25, 25) float in [0, 1]
    out = [np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((resolution, resolution),
                                                                        Image.Resampling.BICUBIC)) for f in faces]
    return np.repeat(np.stack(out)[..., None], 3, axis=-1)


def real_face_crops(count: int, resolution: int, seed: int = 0) -> np.ndarray:
    """A handful of real faces: half astronaut crops, half LFW identities -> (N, R, R, 3) uint8."""
    n_astronaut = (count + 1) // 2
    return np.concatenate([astronaut_face_crops(n_astronaut, resolution, seed),
                           lfw_faces(count - n_astronaut, resolution)])


def ensure_real_face_folder(root: str | Path, count: int = 8, resolution: int = 32, seed: int = 0) -> Path:
    """Write `real_face_crops` as PNGs into `root` once (atomically, safe to race: `ensure_directory`) and
    return the folder."""

    def write(folder: Path) -> None:
        for i, face in enumerate(real_face_crops(count, resolution, seed)):
            Image.fromarray(face).save(folder / f"{i:05d}.png")
        (folder / COMPLETE_MARKER).write_text(f"{count} faces at {resolution}px, seed {seed}\n")

    return ensure_directory(root, write)
