"""Frames of a video side by side in one PNG (the README's strips), optionally after the portrait it was made from.

    python scripts/video_strip.py video=outputs/astronaut_en_female.mp4 output=strip.png [every=20 count=6
        height=192 portrait=ref.png]
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.video import read_video
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.utils.files import atomic_write


def resized(image: np.ndarray, height: int) -> np.ndarray:
    width = round(image.shape[1] * height / image.shape[0])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


@hydra.main(config_path=str(CONFIGS_DIR), config_name="video_strip", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.every < 1 or cfg.count < 1 or cfg.height < 8:
        raise InputError(f"need every >= 1, count >= 1 and height >= 8, got {cfg.every}, {cfg.count}, {cfg.height}")
    frames, _, _, _ = read_video(cfg.video, sample_rate=None)
    picked = frames[:: cfg.every][: cfg.count]  # frames 0, every, 2 every, ...
    tiles = [resized(frame, cfg.height) for frame in picked]
    if cfg.portrait:
        try:
            with Image.open(Path(cfg.portrait).expanduser()) as image:
                tiles.insert(0, resized(np.asarray(image.convert("RGB")), cfg.height))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise InputError(f"cannot read image {cfg.portrait}: {err}") from err
    output = Path(cfg.output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output) as tmp:
        Image.fromarray(np.concatenate(tiles, axis=1)).save(tmp, format="PNG", optimize=True)
    shown = ", ".join(str(i * cfg.every) for i in range(len(picked)))
    print(f"wrote {output}: frames {shown} of {len(frames)}{' after the portrait' if cfg.portrait else ''}")


if __name__ == "__main__":
    main()
