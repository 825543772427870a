"""Attribute editing of a portrait (Fig. 3) with the model folder of the main command: z_sem -> z_sem + alpha * w_att
(Eq. 3), decoded with the face's own Z_T and pasted back into the portrait (same size as the input).

    python scripts/edit.py ref=portrait.png edit=Eyeglasses alpha=0.8 output=out.png
    python scripts/edit.py ref=portrait.png edit=Eyeglasses alpha=0.8 grid=true     # input | reconstruction | edited
    python scripts/edit.py ref=portrait.png edit=Smiling alpha=0.6 sweep=true       # a grid over alpha
    python scripts/edit.py ref=portrait.png edit=Blond_Hair keep=[Male,Young]       # an edit that leaves two alone
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR, DEMO_MODEL, DEMO_PORTRAIT
from faceedittalker.cli.options import plain, resolve_device
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.pipeline import FaceEditTalkerPipeline, parse_edits
from faceedittalker.utils.images import save_grid

SWEEP_COLUMNS = 7


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


@hydra.main(config_path=str(CONFIGS_DIR), config_name="edit", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> Path:
    edit, alpha = plain(cfg.edit), plain(cfg.alpha)
    request = parse_edits(edit, alpha, keep=plain(cfg.keep))  # checked before anything is loaded
    if request is None:
        raise InputError("give an edit, e.g. edit=Eyeglasses alpha=0.8")
    ref = Path(cfg.ref or DEMO_PORTRAIT).expanduser()
    if not ref.is_file():
        raise InputError(f"portrait not found: {ref}")
    label = "_".join(f"{name}{value:+g}" for name, value in request.alphas.items())
    output = Path(cfg.output or Path("outputs") / f"{ref.stem}_{label}.png").expanduser()
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise InputError(f"output must be a .png or .jpg file: {output}")
    if cfg.output is None:
        output.parent.mkdir(parents=True, exist_ok=True)
    elif not output.parent.is_dir():
        raise InputError(f"output folder not found: {output.parent}")
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    pipe = FaceEditTalkerPipeline.from_pretrained(cfg.model or DEMO_MODEL, device=device, vae=cfg.vae,
                                                  upsample=cfg.upsample)  # fmt: skip
    if cfg.sweep:
        name, strength = next(iter(request.alphas.items()))
        alphas = np.linspace(-abs(strength), abs(strength), SWEEP_COLUMNS)
        results = [pipe.edit_image(ref, name, float(a), cfg.steps, cfg.face, cfg.edit_guidance, cfg.edit_region,
                                   request.keep, plain(cfg.edit_guidance_interval)) for a in alphas]  # fmt: skip
        columns = [as_tensor(results[0].face)] + [as_tensor(r.edited) for r in results]
        save_grid(columns, output, cfg.zoom)
        print(f"wrote {output} (input | {name} at alpha {', '.join(f'{a:+.2f}' for a in alphas)})")
        return output
    result = pipe.edit_image(ref, list(request.alphas), list(request.alphas.values()), cfg.steps, cfg.face,
                             cfg.edit_guidance, cfg.edit_region, request.keep,
                             plain(cfg.edit_guidance_interval))  # fmt: skip
    if cfg.grid:
        save_grid([as_tensor(result.face), as_tensor(result.reconstruction), as_tensor(result.edited)], output,
                  cfg.zoom)  # fmt: skip
        print(f"wrote {output} (input | reconstruction | {label})")
    else:
        save_grid([as_tensor(result.pasted)], output, 1, padding=0)
        print(f"wrote {output} (the portrait with {label}, {result.pasted.shape[1]} x {result.pasted.shape[0]} px)")
    return output


if __name__ == "__main__":
    main()
