"""Files: discovery shared by the image datasets and the video preprocessing, and atomic writing.

Every file or folder the package writes is written under a hidden temporary name in the same folder and renamed
over its target when complete (a rename within one file system is atomic), so a crash, an exception or a killed
run never leaves a half-written file behind under the real name: readers see the old content or the new one.
Temporary names are `.tmp-<pid>-<random>-<name>`: unique per writer (ranks and data-loader workers may write the
same cache at once; the last complete one wins), hidden (clip and checkpoint listings skip dot names) and ending
in the target's name, so writers that infer the format from the suffix (PIL, `np.save`, soundfile, PyAV) work.
A temporary is removed when its writer raises; only a process killed outright (SIGKILL) leaves one behind.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faceedittalker.errors import InputError

TMP_PREFIX = ".tmp-"  # temporary files and folders start with this (`remove_partial_checkpoints` relies on it)
COMPLETE_MARKER = ".complete"  # the file that marks a folder `ensure_directory` wrote as complete


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


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden name in the folder of `path` that ends with its name (and so keeps its suffix)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write the file to; on success it is renamed over `path` (which
    may exist: it is replaced), on an exception it is removed and `path` is left as it was. The writer must
    write exactly that path (`np.save` appends ".npy" to other names: pass it an open file then).

        with atomic_write(output) as tmp:
            Image.fromarray(picture).save(tmp)
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent))


@contextmanager
def atomic_directory(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a new empty temporary folder next to `path` (its parents are created) to fill; on success it is
    moved to `path` with `move_directory` (`replace` as there), on an exception it is removed."""
    path = Path(path)
    tmp = temporary_sibling(path)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        move_directory(tmp, path, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_directory(source: str | os.PathLike, target: str | os.PathLike, replace: bool = True) -> Path:
    """Rename the finished folder `source` to `target` (same file system). An existing `target` is replaced
    (`replace=True`: moved aside under a temporary name, then deleted, so `target` is never a mix of old and new)
    or is a `FileExistsError` (`replace=False`; `source` is left for the caller). A folder another process
    renames to `target` meanwhile is a `FileExistsError` too."""
    source, target = Path(source), Path(target)
    if target.exists() or target.is_symlink():
        if not replace:
            raise FileExistsError(f"{target} already exists")
        old = temporary_sibling(target)
        os.replace(target, old)
        try:
            _rename_new(source, target)
        except BaseException:
            os.replace(old, target)  # put the old one back
            raise
        _remove(old)
    else:
        _rename_new(source, target)
    return target


def ensure_directory(path: str | os.PathLike, write: Callable[[Path], None], marker: str = COMPLETE_MARKER) -> Path:
    """`path`, written once: if it holds the file `marker` it is complete and returned as it is; otherwise
    `write(folder)` fills a temporary folder (and must write `marker` into it) that is renamed to `path`.

    Safe when several processes (the ranks of `accelerate launch`) ask at once: each writes its own temporary
    folder and the first complete one is kept. A folder at `path` without the marker is incomplete (not
    written here) and is replaced."""
    path = Path(path).expanduser()
    if (path / marker).is_file():
        return path
    if path.exists():
        shutil.rmtree(path)
    try:
        with atomic_directory(path, replace=False) as tmp:
            write(tmp)
    except FileExistsError:
        if not (path / marker).is_file():  # not another process's complete folder
            raise
    return path


def _rename_new(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)  # onto a non-empty folder this fails; onto a file or an empty folder it replaces
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(f"{target} already exists") from err
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
