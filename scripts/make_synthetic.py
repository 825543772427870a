"""Write the synthetic talking-face set (see configs/synthetic.yaml for the keys).

python scripts/make_synthetic.py output=data/synthetic images=2000 attributes=2000 clips=200
"""

import shutil
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.synthetic.sets import SET_KINDS, write_synthetic_set


@hydra.main(config_path=str(CONFIGS_DIR), config_name="synthetic", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if cfg.resolution < 16 or cfg.resolution % 2:
        raise InputError(f"resolution must be an even number >= 16, got {cfg.resolution}")
    low, high = cfg.clip_seconds
    if not 0.2 <= low <= high:
        raise InputError(f"clip_seconds must be [min, max] with 0.2 <= min <= max, got {list(cfg.clip_seconds)}")
    output = Path(cfg.output).expanduser()
    for kind in SET_KINDS:
        count = int(cfg[kind])
        if count < 0:
            raise InputError(f"{kind} must be a count >= 0, got {count}")
        folder = output / kind
        if count == 0:
            continue
        if folder.exists():
            if not cfg.overwrite:
                raise InputError(f"{folder} already exists (pass overwrite=true to replace it)")
            shutil.rmtree(folder)
        start = time.perf_counter()
        write_synthetic_set(folder, kind, count, cfg.resolution, cfg.seed, cfg.workers, (low, high))
        seconds = time.perf_counter() - start
        print(f"{kind}: {count} at {cfg.resolution} px in {seconds:.1f} s -> {folder}")


if __name__ == "__main__":
    main()
