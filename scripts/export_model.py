"""Assemble one model folder (what `FaceEditTalkerPipeline.from_pretrained` and scripts/infer.py load) from the
exports of the stage runs:

    python scripts/export_model.py video=runs/stage3/export landmarks=runs/stage3-landmarks/export \
        attributes=runs/stage2/export output=models/NAME

`attributes` is optional (without it the model cannot edit). The folder is written under a temporary name and
renamed when complete; a missing or incomplete export is one `error: ...` line and exit code 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import exit_on_input_error
from faceedittalker.pipeline import assemble_model


@hydra.main(config_path=str(CONFIGS_DIR), config_name="export_model", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    output = assemble_model(cfg.video, cfg.landmarks, cfg.output, attributes=cfg.attributes, overwrite=cfg.overwrite,
                            copy_vae=cfg.copy_vae, edit_guidance=cfg.edit_guidance, edit_region=cfg.edit_region)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
