"""Assemble one model folder (what `FaceEditTalkerPipeline.from_pretrained` and scripts/infer.py load) from the
exports of the stage runs:

    python scripts/export_model.py video=runs/stage3/export landmarks=runs/stage3-landmarks/export \
        attributes=runs/stage2/export output=models/NAME
    python scripts/export_model.py model=models/NAME upsampler=runs/tiny-upsampler/export [output=models/NEW]

`attributes` is optional (without it the model cannot edit), and so is `upsampler` (a stage-0 upsampler export,
`experiment=tiny/upsampler`: the model then decodes its faces x4, e.g. 32 px -> 128 px). The folder is written
under a temporary name and renamed when complete; a missing or incomplete export is one `error: ...` line and exit
code 2. With `model=`, the upsampler is put into that existing model folder (or into a copy at `output`) instead.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.cli.options import plain
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import add_upsampler, assemble_model


@hydra.main(config_path=str(CONFIGS_DIR), config_name="export_model", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.model is not None:
        if not cfg.upsampler:
            raise InputError("model= adds a face upsampler to a model folder: give upsampler=RUN/export as well")
        print(f"wrote {add_upsampler(cfg.model, cfg.upsampler, cfg.output)}")
        return
    if cfg.video is None or cfg.landmarks is None or cfg.output is None:
        raise InputError("give video=, landmarks= and output= (the stage exports and the model folder to write)")
    output = assemble_model(cfg.video, cfg.landmarks, cfg.output, attributes=cfg.attributes, overwrite=cfg.overwrite,
                            copy_vae=cfg.copy_vae, edit_guidance=cfg.edit_guidance, edit_region=cfg.edit_region,
                            upsampler=cfg.upsampler, edit_guidance_interval=plain(cfg.edit_guidance_interval),
                            edit_reference=cfg.edit_reference)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
