"""Evaluate a trained landmark predictor P_ldm (Eq. 7) on talking clips: how close its lips are to the truth.

    python scripts/evaluate_landmarks.py model=runs/tiny-stage3-landmarks/export clips=DIR [plot=P.png]

Prints (and with `output=` writes) the metrics of `faceedittalker.stages.stage3.landmark_metrics`; `plot=` draws
the first clip whole: true landmark images over predicted ones, and both mouth-opening curves.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw
from tqdm import tqdm

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.clips import ClipWindowDataset, list_clips
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.landmarks.render import render_landmarks
from faceedittalker.landmarks.topology import mouth_opening
from faceedittalker.metrics.landmarks import landmark_metrics
from faceedittalker.models.audio_encoder import build_audio_encoder
from faceedittalker.models.landmark_predictor import (
    LandmarkPredictor,
    face_frame,
    landmark_targets,
    predict_landmarks,
)
from faceedittalker.stages.stage3_landmarks import AUDIO_ENCODER_FILE

log = logging.getLogger("evaluate_landmarks")


def load_predictor(model: Path, device: str) -> tuple[LandmarkPredictor, object]:
    if not (model / "landmark_predictor" / "config.json").is_file() or not (model / AUDIO_ENCODER_FILE).is_file():
        raise InputError(f"not a stage-3 landmark export (landmark_predictor/, {AUDIO_ENCODER_FILE}): {model}")
    encoder = build_audio_encoder(json.loads((model / AUDIO_ENCODER_FILE).read_text()))
    return LandmarkPredictor.from_pretrained(model / "landmark_predictor").to(device).eval(), encoder


@torch.no_grad()
def plot_clip(path: Path, predictor: LandmarkPredictor, clip: Path, encoder, count: int = 12, size: int = 96) -> None:
    """One whole clip: true (pose-aligned) | predicted landmark images at `count` frames, then the curves."""
    truth = torch.from_numpy(np.load(clip / "landmarks.npy"))[None]  # (1, T, 478, 3)
    reference = truth[:, 0]
    features = encoder.clip_features(clip)[None].to(next(predictor.parameters()).device)
    predicted = predict_landmarks(predictor, features, reference.to(features.device)).cpu()
    aligned = landmark_targets(truth, reference) * face_frame(reference)[1][:, None] + reference[:, None]
    picks = np.linspace(0, truth.shape[1] - 1, count).round().astype(int)
    # Draw at 4x and crop every tile to the box around the face in all frames, so the lips are readable.
    both = torch.cat([aligned[0], predicted[0]])[..., :2]
    low, high = both.amin(dim=(0, 1)).numpy(), both.amax(dim=(0, 1)).numpy()
    centre, half = (low + high) / 2, (high - low).max() / 2 * 1.1
    canvas = 4 * size
    x0, y0 = ((centre - half) * canvas).astype(int)
    span = int(2 * half * canvas)

    def tile(points: np.ndarray) -> np.ndarray:
        drawn = render_landmarks(points, canvas, 2)
        drawn = np.pad(drawn, ((canvas, canvas), (canvas, canvas), (0, 0)))[
            canvas + y0 : canvas + y0 + span, canvas + x0 : canvas + x0 + span
        ]
        return np.asarray(Image.fromarray(drawn).resize((size, size), Image.Resampling.BOX))

    rows = [np.concatenate([tile(seq[0, t].numpy()) for t in picks], axis=1) for seq in (aligned, predicted)]
    width, height = size * count, 80
    curves = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(curves)
    true_open, pred_open = mouth_opening(aligned[0]).numpy(), mouth_opening(predicted[0]).numpy()
    top = max(true_open.max(), pred_open.max(), 1e-6)
    for curve, colour in ((true_open, (200, 30, 30)), (pred_open, (30, 60, 200))):
        xs = np.linspace(0, width - 1, len(curve))
        ys = height - 6 - (height - 20) * curve / top
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
    draw.text((4, 2), "mouth opening - red: true, blue: predicted from the audio", fill="black")
    Image.fromarray(np.concatenate([*rows, np.asarray(curves)], axis=0)).save(path, optimize=True)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="evaluate_landmarks", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    predictor, encoder = load_predictor(Path(cfg.model).expanduser(), cfg.device)
    clips = list_clips(cfg.clips)
    for clip in tqdm(clips, desc=f"audio features ({encoder.name})", leave=False):
        encoder.clip_features(clip)
    data = ClipWindowDataset(cfg.clips, num_frames=cfg.num_frames, window_step=cfg.num_frames,
                             encoder_name=encoder.name, load_frames=False, load_audio=False)  # fmt: skip
    metrics = {"clips": len(clips), **landmark_metrics(predictor, data)}
    print(json.dumps(metrics, indent=2))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(metrics, indent=2))
    if cfg.plot:
        tmp = Path(cfg.plot).with_name(f".tmp-{os.getpid()}-{Path(cfg.plot).name}")
        plot_clip(tmp, predictor, clips[0], encoder)
        os.replace(tmp, cfg.plot)  # no half-written picture
        log.info("wrote %s", cfg.plot)


if __name__ == "__main__":
    main()
