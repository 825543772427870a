"""Regenerate the bundled demo model (faceedittalker/assets/demo_model) with the quickstart's tiny recipes.

    python scripts/make_demo_model.py [output=runs/quickstart] [quickstart=tiny_latent]

Runs (or reuses) `scripts/quickstart.py output=...` with the tiny recipes' own training budgets (the quickstart
shortens them to fit its ~23 minutes) except stage 3, trained 2000 steps instead of tiny/stage3's 400 (where the
frames start to follow the landmarks; tiny/stage3 weighs Eq. 13 x5 in the mouth box: README, "The paper's
two effects") and the face upsampler refined on 32 clips of the model's own frames instead of 8, then copies its
model folder into the package assets. About 95 minutes on 2 idle CPU cores (stage 1: 17, stage 3: ~25, the face
upsampler: ~25, its pairs and refinement: 12 + 5, measured separately; the whole was not re-run since they came).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from faceedittalker import DEMO_MODEL
from faceedittalker.utils.files import atomic_directory

SCRIPTS = Path(__file__).resolve().parent
DEMO_STAGE3_STEPS = 2000
DEMO_PAIRS_CLIPS = 32  # make_upsampler_pairs.py's own default; the quickstart draws 8


def main() -> None:
    args = [a for a in sys.argv[1:] if a.startswith("output=")] or ["output=runs/quickstart"]
    run = Path(args[0].split("=", 1)[1]).expanduser().resolve()
    recipes = [a for a in sys.argv[1:] if a.startswith("quickstart=")]  # quickstart=tiny_latent: the 128 px chain
    latent = any(a.endswith("=tiny_latent") for a in recipes)
    upsampler = ("upsampler", "upsampler_refine") * (not latent)
    stages = ("stage0",) * latent + ("stage1", "stage2", "landmarks") + upsampler
    stage3 = "null" if latent else DEMO_STAGE3_STEPS  # tiny_latent/stage3 keeps its own (2500)
    full_budgets = [f"max_steps.{stage}=null" for stage in stages] + [f"max_steps.stage3={stage3}"]
    if not latent:
        full_budgets.append(f"overrides.upsampler_pairs=['clips={DEMO_PAIRS_CLIPS}']")
    subprocess.run([sys.executable, str(SCRIPTS / "quickstart.py"), f"output={run}", *recipes, *full_budgets],
                   check=True)  # fmt: skip
    target = DEMO_MODEL
    with atomic_directory(target) as folder:
        shutil.copytree(run / "model", folder, dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {target} ({size:.1f} MB) from {run / 'model'}")


if __name__ == "__main__":
    main()
