"""How visible each rendered attribute is at a resolution: the pixels a toggle of it changes on the same face.

    python scripts/attribute_visibility.py [sizes=[32,64]] [people=24]

For `people` random frontal faces, every attribute of `RENDERED_ATTRIBUTES` is switched (`with_attributes`) and
the face rendered again; prints per size the mean number of pixels whose largest channel change exceeds
`threshold`, in pixels of the size and per 32 x 32 px (the count divided by (size / 32)^2, so sizes compare:
an attribute drawn in proportion to the face keeps its per-32 px count; one lost to the pixel grid drops).
"""

from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR
from faceedittalker.errors import InputError, exit_on_input_error
from faceedittalker.synthetic.face import Pose, render_face, rest_expression, sample_identity, with_attributes
from faceedittalker.synthetic.sets import RENDERED_ATTRIBUTES
from faceedittalker.utils.files import write_json_atomic


@hydra.main(config_path=str(CONFIGS_DIR), config_name="attribute_visibility", version_base="1.3")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    sizes = [int(s) for s in cfg.sizes]
    if cfg.people < 1 or any(s < 16 or s % 2 for s in sizes):
        raise InputError("need people >= 1 and even sizes >= 16")
    changed: dict[int, dict[str, list[int]]] = {s: {n: [] for n in RENDERED_ATTRIBUTES} for s in sizes}
    for k in range(cfg.people):
        identity = sample_identity(np.random.default_rng([cfg.seed, k]))
        for size in sizes:
            base = render_face(identity, rest_expression(identity), Pose(), size)[0].astype(np.int16)
            for name in RENDERED_ATTRIBUTES:
                other = with_attributes(identity, **{name: not identity.attributes[name]})
                image = render_face(other, rest_expression(other), Pose(), size)[0].astype(np.int16)
                changed[size][name].append(int((np.abs(image - base).max(-1) > cfg.threshold).sum()))
    result = {str(s): {n: {"pixels": round(float(np.mean(v)), 1),
                           "per_32px": round(float(np.mean(v)) / (s / 32) ** 2, 1)}
                       for n, v in changed[s].items()} for s in sizes}  # fmt: skip
    print(f"{'attribute':<20}" + "".join(f"{f'{s} px (per 32 px)':>22}" for s in sizes))
    for name in RENDERED_ATTRIBUTES:
        cells = [result[str(s)][name] for s in sizes]
        print(f"{name:<20}" + "".join(f"{c['pixels']:>14.1f} ({c['per_32px']:5.1f})" for c in cells))
    if cfg.output:
        write_json_atomic(cfg.output, {"threshold": cfg.threshold, "people": cfg.people, "changed_pixels": result})
        print(f"wrote {cfg.output}")


if __name__ == "__main__":
    main()
