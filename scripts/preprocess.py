"""Raw talking videos -> clip folders: 25 fps, 16 kHz mono, tracked and cropped face, landmarks per frame.

    python scripts/preprocess.py input=RAW_DIR output=CLIPS_DIR [size=512 clip_seconds=10 ...]

See configs/preprocess.yaml for every option and faceedittalker/data/preprocess.py for the layout. Running
it again skips the videos already done; report.json in the output lists kept and rejected clips with reasons.
"""

from __future__ import annotations

import dataclasses

import hydra
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.preprocess import Preprocessor, PreprocessSettings
from faceedittalker.errors import exit_on_input_error
from faceedittalker.landmarks.pose import DEFAULT_MODEL_PATH


@hydra.main(config_path=str(CONFIGS_DIR), config_name="preprocess", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    keys = {f.name for f in dataclasses.fields(PreprocessSettings)}
    settings = PreprocessSettings(**{k: v for k, v in cfg.items() if k in keys and v is not None})
    settings.model_path = str(cfg.model_path or DEFAULT_MODEL_PATH)
    summary = Preprocessor(cfg.input, cfg.output, settings).run(progress=cfg.progress)
    reasons = ", ".join(f"{count} {reason}" for reason, count in summary["rejected_by_reason"].items())
    print(
        f"{summary['clips_kept']} clips kept, {summary['clips_rejected']} rejected"
        + (f" ({reasons})" if reasons else "")
        + f"; {summary['videos_skipped']} of {summary['videos']} videos already done; "
        + f"report: {cfg.output}/report.json"
    )


if __name__ == "__main__":
    main()
