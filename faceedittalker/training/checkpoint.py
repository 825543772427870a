"""Atomic, rotating training checkpoints on top of `Accelerator.save_state`.

A checkpoint is written to a hidden temporary folder and renamed into place only when complete, so a run
killed mid-write (SIGKILL, pre-emption) never leaves a half-written `checkpoint-*`; leftovers are removed on
the next start. Everything is loaded with safetensors or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from faceedittalker.utils.files import TMP_PREFIX, move_directory, write_json_atomic

PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(directory: Path) -> Path | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def remove_partial_checkpoints(directory: Path) -> None:
    """Delete temporary folders left by a run killed while saving."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.name.startswith(TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)


def temporary_path(directory: Path, step: int) -> Path:
    return directory / f"{TMP_PREFIX}{checkpoint_name(step)}"


def finalize(tmp: Path, state: dict, keep: int | None) -> Path:
    """Write the trainer state into `tmp`, rename it into place, then drop old checkpoints beyond `keep`."""
    write_json_atomic(tmp / STATE_FILE, state)
    final = move_directory(tmp, tmp.parent / checkpoint_name(int(state["step"])))
    _fsync_dir(final.parent)
    if keep:
        for old in list_checkpoints(final.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
