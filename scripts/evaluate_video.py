"""Evaluate a trained stage-3 video model (Alg. 3) on talking clips driven by their true landmarks.

    python scripts/evaluate_video.py model=runs/tiny-stage3/export clips=DIR [plot=V.png output=M.json]

For each window: the reference frame -> (z_sem, Z_T), then the frames generated with the window's true landmark
images L, and again with the reference's own landmarks on every frame. PSNR against the true frames, whole and
in the mouth box; the mouth gap between the two drives is what the model takes from L. A still video of the
reference is reported too (the synthetic heads move little, so it is a strong baseline for the whole frame).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.clips import ClipWindowDataset
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.image import mouth_psnr, psnr
from faceedittalker.models.talking_head import TalkingHeadModel
from faceedittalker.utils.images import save_grid


@torch.no_grad()
def evaluate(model: TalkingHeadModel, loader: DataLoader, steps: int | None) -> tuple[dict, list[torch.Tensor]]:
    scores: dict[str, list[tuple[float, float]]] = {"driven_by_L": [], "reference_landmarks": [], "still": []}
    first: list[torch.Tensor] = []
    for batch in tqdm(loader, desc="windows", leave=False):
        frames, landmarks = batch["frames"], batch["landmark_images"]  # (B, F, 3, R, R), (B, F, 3, S, S)
        own = batch["reference_landmark_image"]
        z_sem, z_T = model.encode_reference(batch["reference"], own)
        videos = {
            "driven_by_L": model.generate(z_T, z_sem, landmarks, own, steps=steps),
            "reference_landmarks": model.generate(z_T, z_sem, own[:, None].expand_as(landmarks), own, steps=steps),
            "still": batch["reference"][:, None].expand_as(frames),
        }
        for name, video in videos.items():
            whole = psnr(video.flatten(0, 1), frames.flatten(0, 1)).mean().item()
            scores[name].append((whole, mouth_psnr(video, frames, batch["landmarks"])))
        if not first:
            size = frames.shape[-1]
            drawn = torch.nn.functional.interpolate(landmarks[0] * 2 - 1, size=(size, size), mode="area")
            first = [frames[0], drawn, videos["driven_by_L"][0], videos["reference_landmarks"][0]]
    metrics = {
        name: {
            "psnr": round(float(np.mean([w for w, _ in v])), 2),
            "mouth_psnr": round(float(np.mean([m for _, m in v])), 2),
        }
        for name, v in scores.items()
    }
    return metrics, first


@hydra.main(config_path=str(CONFIGS_DIR), config_name="evaluate_video", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    for key in ("windows", "batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise InputError(f"{key}={cfg[key]} must be a positive integer")
    model = TalkingHeadModel.from_pretrained(cfg.model, device=cfg.device)
    data = ClipWindowDataset(
        cfg.clips,
        num_frames=model.num_frames,
        resolution=model.resolution,
        landmark_image_size=model.landmark_image_size,
        load_audio=False,
        seed=cfg.seed,
    )
    picks = np.linspace(0, len(data) - 1, min(cfg.windows, len(data))).round().astype(int).tolist()
    loader = DataLoader(Subset(data, picks), batch_size=cfg.batch_size)
    scores, first = evaluate(model, loader, cfg.steps)
    metrics = {"clips": len(data.clips), "windows": len(picks), "frames_per_window": model.num_frames, **scores}
    print(json.dumps(metrics, indent=2))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(metrics, indent=2))
    if cfg.plot:  # rows: truth | L | driven by L | driven by the reference's landmarks; columns: frames
        save_grid([torch.stack(first)[:, t] for t in range(model.num_frames)], cfg.plot, zoom=cfg.zoom)


if __name__ == "__main__":
    main()
