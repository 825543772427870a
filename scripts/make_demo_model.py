"""Regenerate the bundled demo model (faceedittalker/assets/demo_model) with the quickstart's tiny recipes.

    python scripts/make_demo_model.py [output=runs/quickstart]

Runs (or reuses) `scripts/quickstart.py output=...` with the tiny recipes' own training budgets (the quickstart
shortens two of them to fit its 20 minutes), then copies its model folder into the package assets.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from faceedittalker import DEMO_MODEL
from faceedittalker.utils.files import atomic_directory

SCRIPTS = Path(__file__).resolve().parent


def main() -> None:
    args = [a for a in sys.argv[1:] if a.startswith("output=")] or ["output=runs/quickstart"]
    run = Path(args[0].split("=", 1)[1]).expanduser().resolve()
    full_budgets = [f"max_steps.{stage}=null" for stage in ("stage1", "stage2", "landmarks", "stage3")]
    subprocess.run([sys.executable, str(SCRIPTS / "quickstart.py"), f"output={run}", *full_budgets], check=True)
    target = DEMO_MODEL
    with atomic_directory(target) as folder:
        shutil.copytree(run / "model", folder, dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {target} ({size:.1f} MB) from {run / 'model'}")


if __name__ == "__main__":
    main()
