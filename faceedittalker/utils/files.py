"""File discovery shared by the image datasets and the video preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from faceedittalker.errors import InputError


def find_files(root: str | Path, extensions: Sequence[str], what: str, noun: str = "files",
               hint: str = "") -> list[Path]:
    """Files under `root` (any depth) with one of `extensions`, sorted. A missing folder or one holding no such
    file is an `InputError` naming `what` ("dataset folder", "input folder"), the `noun` and the `hint`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"{what} not found: {root}{hint}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    if not files:
        raise InputError(f"no {noun} ({', '.join(extensions)}) found in {what} {root}{hint}")
    return files
