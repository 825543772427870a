"""Shared builders of real test media: the astronaut portrait, espeak-ng speech, a "talking" video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faceedittalker import ASSETS_DIR

ASTRONAUT_PATH = ASSETS_DIR / "astronaut.jpg"
SPEECH_DIR = ASSETS_DIR / "speech"


def astronaut() -> np.ndarray:
    """The public-domain astronaut portrait (512x512 RGB uint8)."""
    with Image.open(ASTRONAUT_PATH) as image:
        return np.asarray(image.convert("RGB"))


def speech_path(name: str = "en_male") -> Path:
    return SPEECH_DIR / f"{name}.wav"
