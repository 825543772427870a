"""An independent judge of the synthetic world: a small pixel-space CNN that reads attributes and mouth opening.

It is trained on the renderer's ground truth only (rendered faces, their attribute labels and the inner-lip
opening of their landmarks), never on z_sem or on anything a FaceEditTalker model made, so it can score the
model's outputs (edits, generated frames) without sharing the model's mistakes.

Training faces are drawn from their own seed stream (`synthetic.sets` kind "judge"), with random pose, jaw
opening, lip spread and blinks, rendered at twice the model resolution and cropped at a random zoom before being
reduced to it: the judge sees both the stage-1 framing (whole render) and the pipeline's tighter face crop
(`data.portrait.crop_face`, about 1.4 x closer).

A judge folder holds `config.json` + safetensors (diffusers `ModelMixin`) and `judge.json` (training settings
and held-out accuracy per attribute, mouth-opening r and error).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from faceedittalker.errors import InputError
from faceedittalker.landmarks.topology import mouth_opening
from faceedittalker.metrics.semantics import balanced_accuracy
from faceedittalker.models.pretrained import atomic_folder
from faceedittalker.synthetic.face import Pose, render_face, rest_expression, sample_identity
from faceedittalker.synthetic.sets import MAX_JAW_OPEN, sample_rng
from faceedittalker.utils.files import write_json_atomic
from faceedittalker.utils.images import to_uint8

# The attributes the renderer draws over enough pixels at 32 px to be read back (scripts/train_judge.py reports
# each one's held-out accuracy). Left out: Mouth_Slightly_Open (the judge regresses the opening instead), and
# Heavy_Makeup, Big_Lips, Big_Nose, Narrow_Eyes, Bushy_Eyebrows, Wearing_Lipstick, Wearing_Earrings, which change
# fewer than 10 of the 1024 pixels of a 32 px face by more than 20 grey levels.
JUDGE_ATTRIBUTES: tuple[str, ...] = (
    "Eyeglasses", "Smiling", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bald", "Bangs",
    "Mustache", "No_Beard", "Goatee", "Pale_Skin", "Male", "Young", "Rosy_Cheeks", "5_o_Clock_Shadow",
)  # fmt: skip
JUDGE_FILE = "judge.json"
MAX_ZOOM = 1.5  # the tightest crop the judge trains on: the pipeline's face crop is ~1.4 x the whole render


class WorldJudge(ModelMixin, ConfigMixin):
    """Images (B, 3, R, R) in [-1, 1] -> attribute logits (B, K) and mouth opening (B,) in image heights."""

    @register_to_config
    def __init__(self, names: tuple[str, ...] | list[str] = JUDGE_ATTRIBUTES, resolution: int = 32,
                 channels: tuple[int, ...] | list[int] = (16, 32, 64, 128), opening_scale: float = 0.05):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:  # one 3x3 conv per level, then halve the size: ~4 M multiply-adds at 32 px
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(), nn.AvgPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, len(names) + 1)  # K logits + the (scaled) opening

    @property
    def names(self) -> list[str]:
        return list(self.config.names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-1] != self.config.resolution:  # a frame of another size: read it at the judge's
            images = F.interpolate(images, size=self.config.resolution, mode="area")
        out = self.head(self.features(images).mean((2, 3)))  # (B, K + 1)
        return out[:, :-1], out[:, -1] * self.config.opening_scale

    @torch.no_grad()
    def judge(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
        """uint8 images (N, H, W, 3) or tensors (N, 3, H, W) in [-1, 1] -> {"probabilities": (N, K),
        "opening": (N,)} as numpy arrays."""
        if isinstance(images, np.ndarray):
            images = to_tensor(images)
        device = next(self.parameters()).device
        probabilities, opening = [], []
        for start in range(0, len(images), batch_size):
            logits, open_ = self(images[start:start + batch_size].to(device).float())
            probabilities.append(torch.sigmoid(logits).cpu())
            opening.append(open_.cpu())
        return {"probabilities": torch.cat(probabilities).numpy(), "opening": torch.cat(opening).numpy()}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def render_judge_set(count: int, resolution: int = 32, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` rendered faces for the judge: images (N, R, R, 3) uint8, labels (N, K) bool over
    JUDGE_ATTRIBUTES, inner-lip opening (N,) in image heights of the (cropped) image."""
    images = np.empty((count, resolution, resolution, 3), np.uint8)
    labels = np.empty((count, len(JUDGE_ATTRIBUTES)), bool)
    opening = np.empty(count, np.float32)
    big = 2 * resolution
    for i in range(count):
        rng = sample_rng(seed, "judge", i)
        # Glasses on half the faces (15 % in the world): the edit attribute gets as many examples as its absence.
        identity = sample_identity(rng, Eyeglasses=bool(rng.random() < 0.5))
        expression = rest_expression(identity)
        if not identity.attributes["Smiling"] or rng.random() < 0.5:  # talking mouths, not only rest ones
            expression.jaw_open = float(rng.uniform(0, 1.2 * MAX_JAW_OPEN))
        expression.spread = float(rng.uniform(-0.6, 0.6))
        if rng.random() < 0.1:
            expression.blink_right = expression.blink_left = float(rng.uniform(0.3, 1.0))
        pose = Pose(yaw=float(rng.uniform(-18, 18)), pitch=float(rng.uniform(-12, 12)),
                    roll=float(rng.uniform(-10, 10)), shift_x=float(rng.uniform(-0.03, 0.03)),
                    shift_y=float(rng.uniform(-0.03, 0.03)), scale=float(rng.uniform(0.92, 1.08)))  # fmt: skip
        image, landmarks = render_face(identity, expression, pose, big)
        # A random zoom about the centre (+ a small shift): the framings of stage 1 and of the pipeline's crop.
        side = big / rng.uniform(1.0, MAX_ZOOM)
        x0 = float(np.clip((big - side) / 2 + rng.uniform(-0.04, 0.04) * big, 0, big - side))
        y0 = float(np.clip((big - side) / 2 + rng.uniform(-0.04, 0.04) * big, 0, big - side))
        x, y = int(round(x0)), int(round(y0))
        size = int(round(side))
        images[i] = cv2.resize(image[y:y + size, x:x + size], (resolution, resolution), interpolation=cv2.INTER_AREA)
        labels[i] = [identity.attributes[name] for name in JUDGE_ATTRIBUTES]
        opening[i] = mouth_opening(landmarks) * big / size  # image heights of the crop
    return images, labels, opening


def pearson_r(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two series; None when either is constant (or shorter than 3)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def judge_metrics(judge: WorldJudge, images: np.ndarray, labels: np.ndarray, opening: np.ndarray) -> dict:
    """Held-out scores: balanced accuracy per attribute (0.5 = chance), mouth-opening r and mean error."""
    out = judge.judge(images)
    accuracy = balanced_accuracy(torch.from_numpy(out["probabilities"] > 0.5), torch.from_numpy(labels),
                                 judge.names)  # fmt: skip
    return {"balanced_accuracy": accuracy,
            "mean_balanced_accuracy": round(float(np.mean([v for v in accuracy.values() if v is not None])), 4),
            "opening_pearson_r": pearson_r(out["opening"], opening),
            "opening_mae": round(float(np.abs(out["opening"] - opening).mean()), 5),
            "opening_std": round(float(opening.std()), 5)}  # fmt: skip


def train_judge(images: np.ndarray, labels: np.ndarray, opening: np.ndarray, resolution: int, steps: int = 1500,
                batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                channels: tuple[int, ...] = (16, 32, 64, 128), blur: float = 0.0) -> WorldJudge:
    """Fit the judge: class-balanced BCE per attribute + MSE of the scaled opening, AdamW with a cosine decay,
    horizontal flips (every judged attribute is left-right symmetric) and, on a share `blur` of the faces
    (default none), a Gaussian blur and noise, tried for the generated frames' softness (README: it did not help
    the judge read the demo model's mouths)."""
    torch.manual_seed(seed)
    judge = WorldJudge(JUDGE_ATTRIBUTES, resolution, tuple(channels), opening_scale=float(opening.std() * 2 or 0.05))
    x, y = to_tensor(images), torch.from_numpy(labels).float()
    target = torch.from_numpy(opening).float()
    positives = y.mean(0).clamp(0.02, 0.98)
    pos_weight = (1 - positives) / positives  # rare attributes (glasses: 15 %) weigh as much as common ones
    optimiser = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    judge.train()
    for _ in range(steps):
        index = torch.randint(len(x), (batch_size,), generator=generator)
        batch = x[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        if blur > 0:
            batch = degrade(batch, blur, generator)
        logits, predicted = judge(batch)
        loss = F.binary_cross_entropy_with_logits(logits, y[index], pos_weight=pos_weight)
        loss = loss + F.mse_loss(predicted / judge.config.opening_scale, target[index] / judge.config.opening_scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return judge.eval()


def degrade(batch: torch.Tensor, share: float, generator: torch.Generator, max_sigma: float = 1.5,
            max_noise: float = 0.06) -> torch.Tensor:
    """A share of the images (N, 3, R, R) in [-1, 1] blurred (one Gaussian sigma in [0.3, max_sigma] px per batch)
    and noised (std up to max_noise): the softness of generated frames, drawn from the renders alone."""
    chosen = torch.rand(len(batch), generator=generator) < share
    sigma = 0.3 + (max_sigma - 0.3) * float(torch.rand(1, generator=generator))
    soft = gaussian_blur(batch, kernel_size=5, sigma=sigma)
    noise = torch.randn(batch.shape, generator=generator) * (max_noise * torch.rand(len(batch), 1, 1, 1,
                                                                                    generator=generator))
    return torch.where(chosen[:, None, None, None], (soft + noise).clamp(-1, 1), batch)


def fit_and_save_judge(output: str | Path, resolution: int, count: int = 3000, held_out: int = 400,
                       steps: int = 3000, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                       overwrite: bool = False, blur: float = 0.0,
                       channels: tuple[int, ...] = (16, 32, 64, 128)) -> dict:
    """Render `count` + `held_out` faces, train on the first, score on the rest, write the judge folder.
    Returns the report written as judge.json."""
    if count < 2 or held_out < 2 or steps < 1:
        raise InputError("need count >= 2, held_out >= 2 and steps >= 1")
    start = time.perf_counter()
    images, labels, opening = render_judge_set(count + held_out, resolution, seed)
    rendered = time.perf_counter() - start
    judge = train_judge(images[:count], labels[:count], opening[:count], resolution, steps, batch_size, lr, seed,
                        tuple(channels), blur)  # fmt: skip
    softened = to_uint8(gaussian_blur(to_tensor(images[count:]), kernel_size=5, sigma=1.0))
    report = {"resolution": resolution, "train_faces": count, "held_out_faces": held_out, "steps": steps,
              "batch_size": batch_size, "lr": lr, "seed": seed, "blur": blur,
              "channels": list(channels),
              "held_out": judge_metrics(judge, images[count:], labels[count:], opening[count:]),
              # the same faces blurred (sigma 1 px), as soft as the generated frames it reads
              "held_out_blurred": judge_metrics(judge, softened, labels[count:], opening[count:]),
              "train_positives": {n: int(labels[:count, i].sum()) for i, n in enumerate(JUDGE_ATTRIBUTES)},
              "seconds": {"render": round(rendered, 1), "total": round(time.perf_counter() - start, 1)}}  # fmt: skip
    with atomic_folder(output, overwrite) as tmp:
        judge.save_pretrained(tmp, safe_serialization=True)
        write_json_atomic(tmp / JUDGE_FILE, report)
    return report


def load_judge(directory: str | Path, device: str | torch.device = "cpu") -> tuple[WorldJudge, dict[str, Any]]:
    """A judge folder written by `fit_and_save_judge` -> (judge, its report); a wrong folder is an InputError."""
    directory = Path(directory).expanduser()
    report_path = directory / JUDGE_FILE
    if not report_path.is_file() or not any(directory.glob("*.safetensors")):
        raise InputError(f"not a judge folder (no {JUDGE_FILE} and safetensors weights): {directory} "
                         "(train one with scripts/train_judge.py)")  # fmt: skip
    try:
        judge = WorldJudge.from_pretrained(directory, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        raise InputError(f"cannot load the judge in {directory}: {str(err).splitlines()[0]}") from err
    return judge.to(device).eval(), json.loads(report_path.read_text())
