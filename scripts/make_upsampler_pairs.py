"""Write (generated face, true face) pairs to refine a face upsampler on a video model's own errors.

    python scripts/make_upsampler_pairs.py model=faceedittalker/assets/demo_model output=runs/upsampler-pairs \
        [clips=32 seed=0 scale=4]

The model's video denoiser draws `clips` synthetic talking clips at its own resolution r, driven by the clips'
true landmarks (people and speech cuts that no evaluation of metrics/world.py draws); each frame is paired with
the rendered truth's crop at scale x r. Then `python scripts/train.py experiment=tiny/upsampler_refine` mixes
them into the upsampler's training (stage0.upsampler.pairs). About 20 s a clip for the demo model on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.upsampler_pairs import save_upsampler_pairs
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.world import upsampler_pairs
from faceedittalker.pipeline import FaceEditTalkerPipeline


@hydra.main(config_path=str(CONFIGS_DIR), config_name="make_upsampler_pairs", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.clips < 1 or cfg.clip_seconds < 1 or cfg.scale < 2:
        raise InputError(f"need clips >= 1, clip_seconds >= 1 and scale >= 2, got {cfg.clips}, {cfg.clip_seconds}, "
                         f"{cfg.scale}")
    output = Path(cfg.output).expanduser()
    if output.exists() and not cfg.overwrite:
        raise InputError(f"{output} exists (overwrite=true replaces it)")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model, device=cfg.device, upsample=False)
    low, high = upsampler_pairs(pipe, int(cfg.clips), float(cfg.clip_seconds), int(cfg.seed), int(cfg.portrait_size),
                                int(cfg.scale))  # fmt: skip
    info = {"model": str(cfg.model), "clips": int(cfg.clips), "clip_seconds": float(cfg.clip_seconds),
            "seed": int(cfg.seed), "driven_by": "true landmarks"}  # fmt: skip
    save_upsampler_pairs(output, low, high, info, overwrite=bool(cfg.overwrite))
    print(f"wrote {len(low)} pairs ({low.shape[1]} px -> {high.shape[1]} px) to {output}")


if __name__ == "__main__":
    main()
