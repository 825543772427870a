"""Fig. 6: the semantic codes z_sem of labelled faces on their first two principal axes, coloured by attribute.

    python scripts/plot_z_sem.py model=DIR
    python scripts/plot_z_sem.py model=DIR attributes=[Eyeglasses,Smiling] count=512 output=z_sem_pca.png

One PCA of the codes of synthetic labelled faces (drawn at the model's resolution, faces none of the stages saw
with these seeds); one panel per attribute over the same axes, faces with it in orange, without it in blue
(the title counts them: with/without). If an attribute is linear in z_sem, as the edit directions assume, its two
colours fall apart along some direction.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.images import LabelledImageDataset
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.semantics import principal_components
from faceedittalker.pipeline import FaceEditTalkerPipeline, semantic_codes
from faceedittalker.synthetic.sets import RENDERED_ATTRIBUTES, ensure_synthetic_set
from faceedittalker.utils.files import atomic_write

WITH, WITHOUT = (230, 120, 30), (40, 90, 200)  # orange / blue


def draw_panels(points: np.ndarray, labels: np.ndarray, names: list[str], size: int) -> Image.Image:
    """Scatter plots of points (N, 2) side by side, one per label column (N, K boolean), on shared axes."""
    margin, top = size // 16, size // 8
    low, high = points.min(0), points.max(0)
    scale = (size - 2 * margin) / np.maximum(high - low, 1e-12)
    xy = (points - low) * scale
    xy = np.stack([margin + xy[:, 0], size - margin - xy[:, 1] * (size - margin - top) / (size - 2 * margin)], 1)
    picture = Image.new("RGB", (size * len(names), size), "white")
    draw = ImageDraw.Draw(picture)
    radius = max(2, size // 100)
    for k, name in enumerate(names):
        left = k * size
        draw.rectangle([left + margin // 2, top - margin // 2, left + size - margin // 2, size - margin // 2],
                       outline=(160, 160, 160))  # fmt: skip
        counts = f"{int(labels[:, k].sum())}/{int((~labels[:, k]).sum())}"  # with / without
        draw.text((left + margin, margin // 2), f"{name} {counts}", fill=(0, 0, 0))
        for positive in (False, True):  # the rarer class on top
            for x, y in xy[labels[:, k] == positive]:
                draw.ellipse([left + x - radius, y - radius, left + x + radius, y + radius],
                             fill=WITH if positive else WITHOUT)  # fmt: skip
    return picture


@hydra.main(config_path=str(CONFIGS_DIR), config_name="plot_z_sem", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> Path:
    names = [str(n) for n in cfg.attributes]
    unknown = [n for n in names if n not in RENDERED_ATTRIBUTES]
    if not names or unknown:
        raise InputError(f"attributes must be some of the synthetic renderer's: {', '.join(RENDERED_ATTRIBUTES)}"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))  # fmt: skip
    if not isinstance(cfg.count, int) or cfg.count < 3:
        raise InputError(f"count must be a whole number of at least 3, got {cfg.count!r}")
    output = Path(cfg.output).expanduser()
    if output.suffix.lower() != ".png" or not output.parent.is_dir():
        raise InputError(f"output must be a .png file in an existing folder: {output}")
    video_model = FaceEditTalkerPipeline.load_part(FaceEditTalkerPipeline.read_config(cfg.model)[0], "video_model")
    video_model = video_model.to(cfg.device).eval()
    root = ensure_synthetic_set(Path(cfg.cache_dir) / "synthetic", "attributes", cfg.count, video_model.resolution,
                                cfg.seed)  # fmt: skip
    faces = LabelledImageDataset(root, video_model.resolution, hflip=False)
    images = torch.stack([faces[i]["image"] for i in range(len(faces))])
    z_sem = semantic_codes(video_model, images, cfg.batch_size)
    points = principal_components(z_sem, 2).numpy()
    labels = (faces.labels[:, [faces.names.index(n) for n in names]] > 0.5).numpy()
    picture = draw_panels(points, labels, names, int(cfg.panel))
    with atomic_write(output) as tmp:
        picture.save(tmp, format="PNG")
    print(f"wrote {output} ({len(faces)} faces, z_sem of {z_sem.shape[1]} dims on 2 principal axes)")
    return output


if __name__ == "__main__":
    main()
