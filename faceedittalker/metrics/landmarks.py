"""The landmark predictor P_ldm on held-out clips: lip landmark distance and mouth-opening correlation."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from faceedittalker.landmarks.topology import LIP_POINTS, mouth_opening
from faceedittalker.models.landmark_predictor import face_frame, landmark_targets, predict_landmarks


@torch.no_grad()
def landmark_metrics(predictor: nn.Module, clips: Dataset, batch_size: int = 8) -> dict:
    """P_ldm on windows with audio features (`ClipWindowDataset(..., encoder_name=...)`): the mean distance of
    the lip landmarks (M-LMD-style, in pixels of a 512 px frame, head motion removed as the model removes it)
    and the Pearson r of predicted vs true inner-lip opening over all frames."""
    if not len(clips):
        return {}
    device = next(predictor.parameters()).device
    distances, predicted_opening, true_opening = [], [], []
    for batch in DataLoader(clips, batch_size=batch_size):
        reference = batch["reference_landmarks"].to(device)
        truth = landmark_targets(batch["landmarks"].to(device), reference) * face_frame(reference)[1][:, None]
        truth = truth + reference[:, None]  # pose-aligned true landmarks, image-normalised
        predicted = predict_landmarks(predictor, batch["audio_features"].to(device), reference)
        lips = (predicted[..., LIP_POINTS, :2] - truth[..., LIP_POINTS, :2]).norm(dim=-1)  # (B, T, K)
        distances.append(lips.mean(-1).flatten() * 512)
        predicted_opening.append(mouth_opening(predicted).flatten())
        true_opening.append(mouth_opening(truth).flatten())
    predicted_opening, true_opening = torch.cat(predicted_opening), torch.cat(true_opening)
    r = torch.corrcoef(torch.stack([predicted_opening, true_opening]))[0, 1].item()
    return {"windows": len(clips), "frames": len(true_opening),
            "mouth_lmd_px512": round(torch.cat(distances).mean().item(), 3),
            "mouth_opening_pearson_r": round(r, 4)}  # fmt: skip
