"""Test helpers: the real configs composed with Hydra, and scripts run as a user runs them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
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


def gradients(model: torch.nn.Module, loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of one backward pass (the same seed each time, for dropout)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    loss_of(model).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_checkpointing_keeps_gradients(model: torch.nn.Module,
                                         loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> None:
    """The same gradients (and a checkpointed backward that really recomputes) with checkpointing off and on."""
    plain = gradients(model, loss_of)
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    # diffusers looks torch.utils.checkpoint.checkpoint up at call time: count the recomputed calls.
    with mock.patch("torch.utils.checkpoint.checkpoint", wraps=torch.utils.checkpoint.checkpoint) as spy:
        checkpointed = gradients(model, loss_of)
    model.disable_gradient_checkpointing()
    assert spy.call_count > 0 and {c.kwargs.get("use_reentrant") for c in spy.call_args_list} == {False}
    assert plain.keys() == checkpointed.keys() and len(plain) == sum(1 for _ in model.parameters())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)
