"""Test helpers: the real configs composed with Hydra, and scripts run as a user runs them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from faceedittalker import CONFIGS_DIR, REPO_ROOT


def compose_train_config(overrides: list[str]) -> DictConfig:
    """The real `configs/train.yaml` with command-line style overrides, as `scripts/train.py` sees it."""
    with initialize_config_dir(config_dir=str(CONFIGS_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def tiny_overrides(cache_dir: Path, *extra: str, experiment: str = "tiny/stage1") -> list[str]:
    """A tiny recipe (`experiment=tiny/stage1` by default; 64 synthetic faces in `cache_dir`), shortened further for
    unit tests. `extra` may switch the stage (`stage=3`): every tiny recipe shares `experiment/tiny/_base.yaml`."""
    return [f"experiment={experiment}", f"paths.cache_dir={cache_dir}", "data.root.count=64",
            "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.sample_every=4",
            "trainer.batch_size=4", "trainer.num_sample_images=2", "sampling.sample_steps=3",
            "sampling.invert_steps=3", *extra]


def run_script(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `scripts/<script>` as a user would; returns the completed process (text output)."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)


def run_script_main(monkeypatch, script: str, *args: str) -> int:
    """`scripts/<script>`'s Hydra main with these command-line keys, in this process (no interpreter start-up, so
    fast); returns the exit code."""
    spec = importlib.util.spec_from_file_location(Path(script).stem + "_script", REPO_ROOT / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *args])
    try:
        module.main()
    except SystemExit as exit_:
        return exit_.code
    return 0
