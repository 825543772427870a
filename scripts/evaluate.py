"""The paper's metrics for generated talking-head videos against the ground truth (Tables II, III and V).

    python scripts/evaluate.py generated=DIR_OR_MP4 reference=DIR_OR_MP4 [metrics=[fid,ssim,...]] [output=DIR]
    python scripts/evaluate.py table=V reference=DIR runs='{II: DIR, III: DIR, IV: DIR}' [output=DIR]

Writes metrics.md / metrics.csv / metrics.json in `output`, columns in the paper's order (FID, SSIM, PSNR, CPBD,
Min Dist, AVConf, AVOffset, M-LMD, F-LMD, TL-ID, TG-ID): one row per video and their mean (FID only for the whole
set), or for table=V one row per run plus row I, the original videos scored against themselves. How frames are
paired, aligned and cropped: `faceedittalker.metrics.suite`. Metrics whose weights are missing are left out, with
the reason printed once each.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.suite import (
    TABLE_V_METRICS,
    Evaluators,
    Pair,
    evaluate_pair,
    find_videos,
    mean_row,
    pair_videos,
    selected_metrics,
    write_table,
)


def evaluate_set(suite: Evaluators, pairs: list[Pair], cfg: DictConfig, desc: str) -> tuple[dict, dict]:
    """Per-video rows and their mean (with the set's FID) for one generated set against the reference."""
    rows, generated_frames, reference_frames = {}, [], []
    for name, gen_source, ref_source in tqdm(pairs, desc=desc, unit="video"):
        row, gen, ref = evaluate_pair(suite, gen_source.read(), ref_source.read(), cfg.crop, cfg.crop_size,
                                      cfg.crop_scale, cfg.lmd_landmarks)  # fmt: skip
        rows[name] = row
        if suite.fid is not None:
            generated_frames.append(gen)
            reference_frames.append(ref)
    mean = mean_row(list(rows.values()), suite.active)
    if suite.fid is not None:
        from faceedittalker.metrics.fid import set_fid

        mean["fid"] = set_fid(suite.fid, generated_frames, reference_frames) if mean["frames"] >= 2 else math.nan
    return rows, mean


@hydra.main(config_path=str(CONFIGS_DIR), config_name="evaluate", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    metrics = list(cfg.metrics) if cfg.table == "II" else [m for m in cfg.metrics if m in TABLE_V_METRICS]
    if cfg.table not in ("II", "V"):
        raise InputError(f"table must be II or V, got {cfg.table!r}")
    if cfg.table == "II" and not cfg.generated:
        raise InputError("give generated=DIR_OR_MP4 (the videos to score)")
    if cfg.table == "V" and not cfg.runs:
        raise InputError("table=V needs runs='{II: DIR, III: DIR, IV: DIR}' (one generated folder per recipe)")
    selected_metrics(list(cfg.metrics))
    # Every input is found and paired before any model is loaded, so bad input fails at once.
    reference = find_videos(cfg.reference, "reference")
    if cfg.table == "II":
        sets = {"videos": pair_videos(find_videos(cfg.generated, "generated"), reference)}
    else:
        sets = {"I (original)": pair_videos(reference, reference)}
        sets.update({str(name): pair_videos(find_videos(folder, f"run {name}"), reference)
                     for name, folder in cfg.runs.items()})  # fmt: skip
    suite = Evaluators.build(metrics, cfg.weights_dir, cfg.identity_embedder, cfg.arcface, cfg.device)
    for line in [*dict.fromkeys(suite.skipped.values()), *suite.notes]:  # once each (the sync columns share one)
        print(line, file=sys.stderr)
    if not suite.active:
        raise InputError("every requested metric was skipped (see above)")
    extra = {"skipped": suite.skipped, "identity_embedder": suite.identity_name,
             "crop": cfg.crop, "crop_size": cfg.crop_size, "lmd_landmarks": cfg.lmd_landmarks}  # fmt: skip
    if cfg.table == "II":
        rows, mean = evaluate_set(suite, sets["videos"], cfg, "videos")
        paths = write_table({**rows, "mean": mean}, suite.active, cfg.output, extra)
    else:
        table = {name: evaluate_set(suite, pairs, cfg, name)[1] for name, pairs in sets.items()}
        paths = write_table(table, suite.active, cfg.output, extra, first_column="method")
    print(Path(paths["md"]).read_text(), end="")
    print(json.dumps({key: str(path) for key, path in paths.items()}))


if __name__ == "__main__":
    main()
