"""Fig. 7: a row of faces from one portrait's face to another's (DiffAE: z_sem lerped, Z_T slerped).

    python scripts/interpolate.py model=DIR a=first.png b=second.png steps=5 output=interpolation.png

The ends are the two faces' reconstructions; the faces between are decoded from the mixed codes, each driven by
the landmark image of the mixed landmarks.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import FaceEditTalkerPipeline
from faceedittalker.utils.images import save_grid


@hydra.main(config_path=str(CONFIGS_DIR), config_name="interpolate", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> Path:
    if not isinstance(cfg.steps, int) or cfg.steps < 2:
        raise InputError(f"steps must be a whole number of at least 2 (both ends), got {cfg.steps!r}")
    output = Path(cfg.output).expanduser()
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"output must be a .png or .jpg file: {output}")
    if not output.parent.is_dir():
        raise InputError(f"output folder not found: {output.parent}")
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model, device=cfg.device, vae=cfg.vae)
    faces = pipe.interpolate(cfg.a, cfg.b, cfg.steps, cfg.ddim_steps, cfg.face)
    save_grid([torch.from_numpy(face).permute(2, 0, 1)[None].float() / 127.5 - 1 for face in faces], output,
              cfg.zoom)  # fmt: skip
    print(f"wrote {output} ({len(faces)} faces from {cfg.a} to {cfg.b})")
    return output


if __name__ == "__main__":
    main()
