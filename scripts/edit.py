"""Attribute editing of one face (Fig. 3): z_sem -> z_sem + alpha * w_att, decoded with the face's own Z_T.

    python scripts/edit.py feature_space=runs/tiny/export attributes=runs/tiny-stage2/export \
        input=face.png edits="{Eyeglasses: 0.3}" output=edited.png
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.images import load_image
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.models.attributes import AttributeClassifier
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.utils.images import save_grid


def load_attribute_library(path: str) -> AttributeClassifier:
    folder = Path(path).expanduser()
    if (folder / "attribute_classifier").is_dir():
        folder = folder / "attribute_classifier"
    if not (folder / "config.json").is_file():
        raise InputError(f"not a stage-2 export (no attribute_classifier/config.json): {path}")
    return AttributeClassifier.from_pretrained(folder)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="edit", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    edits = OmegaConf.to_container(cfg.edits) if cfg.edits is not None else None
    if not isinstance(edits, dict) or not edits:
        raise InputError('give at least one edit, e.g. edits="{Eyeglasses: 0.3}"')
    if not Path(cfg.input).is_file():
        raise InputError(f"input image not found: {cfg.input}")
    space = ImageFeatureSpace.from_pretrained(cfg.feature_space, device=cfg.device)
    library = load_attribute_library(cfg.attributes).to(cfg.device)
    try:
        image = load_image(cfg.input, space.resolution)[None].to(cfg.device)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {cfg.input}: {err}") from err
    z_sem = space.encode_semantic(image)
    edited_z = library.edit(z_sem, {str(k): float(v) for k, v in edits.items()})  # checks names and alphas
    z_T = space.encode_stochastic(image, z_sem, cfg.steps)
    columns = [image, space.decode(z_T, z_sem, cfg.steps), space.decode(z_T, edited_z, cfg.steps)]
    output = save_grid(columns, cfg.output, cfg.zoom)
    print(f"wrote {output} (input | reconstruction | {', '.join(f'{k} {v:+g}' for k, v in edits.items())})")


if __name__ == "__main__":
    main()
