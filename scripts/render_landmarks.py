"""Detect the face in a portrait and write its landmark image L (the same drawing training and inference use).

python scripts/render_landmarks.py input=portrait.jpg output=landmarks.png [overlay=false size=512]
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.landmarks.detector import FaceLandmarker
from faceedittalker.landmarks.render import render_landmarks
from faceedittalker.utils.files import atomic_write


@hydra.main(config_path=str(CONFIGS_DIR), config_name="render_landmarks", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    source, output = Path(cfg.input), Path(cfg.output)
    try:
        with Image.open(source) as image:
            portrait = np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {source}: {err}") from err
    with FaceLandmarker() as landmarker:
        faces = landmarker.detect_all(portrait)
    if not faces:
        raise InputError(f"no face found in {source}")
    size = cfg.size or portrait.shape[:2]
    drawing = render_landmarks(faces[0].points, size, thickness=cfg.thickness)
    if cfg.overlay:
        shown = np.asarray(Image.fromarray(portrait).resize(drawing.shape[1::-1], Image.Resampling.BICUBIC)).copy()
        drawn = drawing.any(axis=2)
        shown[drawn] = drawing[drawn]
        drawing = np.concatenate([drawing, shown], axis=1)
    with atomic_write(output) as tmp:
        Image.fromarray(drawing).save(tmp, format="PNG")  # always PNG, whatever the name
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
