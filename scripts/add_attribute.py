"""A user-defined edit attribute from two folders of example faces, added to a model folder's attribute library.

    python scripts/add_attribute.py model=DIR name=Round_Glasses positive=with/ negative=without/ [output=DIR2]
    python scripts/infer.py model=DIR edit=Round_Glasses alpha=0.5

Each image's z_sem is encoded with the model's E_sem (the face cropped as inference crops it, or `crop=false`
for images that are face crops already); a linear classifier on the library's standardised codes separates the
two sets, as stage 2 fits the 40 attributes, and its normalised weight is the edit direction (Eq. 3).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.images import IMAGE_EXTENSIONS
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import FaceEditTalkerPipeline, add_attribute
from faceedittalker.utils.files import find_files


@hydra.main(config_path=str(CONFIGS_DIR), config_name="add_attribute", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> Path:
    if cfg.face not in ("only", "largest"):
        raise InputError(f"face must be only or largest, got {cfg.face!r}")
    if not float(cfg.inverse_regularisation) > 0:
        raise InputError(f"inverse_regularisation must be positive, got {cfg.inverse_regularisation}")
    positive = find_files(cfg.positive, IMAGE_EXTENSIONS, "positive folder", "images")
    negative = find_files(cfg.negative, IMAGE_EXTENSIONS, "negative folder", "images")
    target = add_attribute(cfg.model, str(cfg.name), positive, negative, cfg.output, bool(cfg.overwrite),
                           bool(cfg.crop), cfg.face, cfg.device, float(cfg.inverse_regularisation))
    names = FaceEditTalkerPipeline.load_part(Path(target), "attribute_library").names
    print(f"added {cfg.name} ({len(positive)} with, {len(negative)} without) to {target}: {len(names)} attributes")
    return target


if __name__ == "__main__":
    main()
