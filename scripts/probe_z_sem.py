"""How semantic z_sem is: a linear probe of each attribute on held-out labelled faces, against 8x8 pixels.

    python scripts/probe_z_sem.py model=runs/tiny/export
    python scripts/probe_z_sem.py model=runs/celebahq/export images=data/celebahq/CelebA-HQ-img

A class-balanced logistic regression on standardised z_sem codes (and, as the baseline, on the images
average-pooled to 8 x 8) is fitted on 80 % of the labelled faces and scored by per-attribute AUC on the other
20 %. On the synthetic set (the default) every face is its own identity and none was seen by stage 1, which
trains on the `images` set. Writes a JSON ({"z_sem": {...}, "pixels": {...}, "mean": {...}}) and prints a table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from faceedittalker import CONFIGS_DIR
from faceedittalker.data.images import LabelledImageDataset
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.metrics.semantics import held_out_split, probe_against_pixels
from faceedittalker.models.feature_space import ImageFeatureSpace
from faceedittalker.synthetic.sets import RENDERED_ATTRIBUTES, ensure_synthetic_set


@torch.no_grad()
def encode(space: ImageFeatureSpace, images: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    codes = [space.encode_semantic(images[i:i + batch_size].to(device)).cpu()
             for i in tqdm(range(0, len(images), batch_size), desc="z_sem", leave=False)]
    return torch.cat(codes)  # (N, Z)


@hydra.main(config_path=str(CONFIGS_DIR), config_name="probe_z_sem", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    if not 0 < cfg.held_out < 1:
        raise InputError(f"held_out must be a fraction in (0, 1), got {cfg.held_out}")
    space = ImageFeatureSpace.from_pretrained(cfg.model, device=cfg.device, autoencoder_path=cfg.autoencoder_path)
    if cfg.images:
        root = Path(cfg.images).expanduser()
        if not root.is_dir():
            raise InputError(f"image folder not found: {root}")
    else:
        root = ensure_synthetic_set(Path(cfg.cache_dir) / "synthetic", "attributes", cfg.count, space.resolution,
                                    cfg.seed)
    dataset = LabelledImageDataset(root, space.resolution, cfg.attribute_file, hflip=False)
    names = list(cfg.attributes) if cfg.attributes else (list(RENDERED_ATTRIBUTES) if not cfg.images
                                                         else list(dataset.names))
    unknown = [n for n in names if n not in dataset.names]
    if unknown:
        raise InputError(f"unknown attributes {unknown}; the attribute file has {dataset.names}")
    if len(dataset) < 10:
        raise InputError(f"need at least 10 labelled faces for a held-out probe, found {len(dataset)}")
    columns = [dataset.names.index(n) for n in names]
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # (N, 3, R, R) in [-1, 1]
    labels = dataset.labels[:, columns] > 0.5  # (N, K)
    _, held_out = held_out_split(len(dataset), cfg.held_out, cfg.seed)

    z_sem = encode(space, images, cfg.batch_size, cfg.device)
    result = probe_against_pixels(z_sem, images, labels, names, held_out, cfg.inverse_regularisation,
                                  cfg.pixel_size)
    result["settings"] = {"model": str(cfg.model), "images": str(root), "faces": len(dataset),
                          "held_out": len(held_out), "pixel_size": cfg.pixel_size, "z_dim": z_sem.shape[1],
                          "inverse_regularisation": cfg.inverse_regularisation}
    result["held_out_positives"] = {n: int(labels[held_out, i].sum()) for i, n in enumerate(names)}

    output = Path(cfg.output) if cfg.output else Path(cfg.model).expanduser().parent / "probe_z_sem.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(json.dumps(result, indent=1))
    os.replace(partial, output)

    fmt = lambda v: "   -  " if v is None else f"{v:6.3f}"
    print(f"{'attribute':<22}{'z_sem':>7}{'pixels':>8}{'held-out +':>12}")
    for name in names:
        print(f"{name:<22}{fmt(result['z_sem'][name]):>7}{fmt(result['pixels'][name]):>8}"
              f"{result['held_out_positives'][name]:>12}")
    print(f"{'mean AUC':<22}{fmt(result['mean']['z_sem']):>7}{fmt(result['mean']['pixels']):>8}")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
