"""Model folders: one JSON file naming the parts and the settings, one sub-folder per part (safetensors + JSON).

`ImageFeatureSpace` (stage 1), `TalkingHeadModel` (stage 3) and `FaceEditTalkerPipeline` (the whole model) are
each such a folder; `PretrainedFolder` is what they share: writing the JSON atomically, checking on load that the
folder is complete, and loading each part from its sub-folder.

Why not diffusers' `DiffusionPipeline`: its `from_pretrained` resolves each part from the (library, class) pair
written in `model_index.json` by importing that library, i.e. the files choose the code that runs. Here every
container declares its parts' classes in code (`parts`); the names stored in the JSON are only checked against
them, so a folder can never make us import or call anything else. Parts that are diffusers `ModelMixin`s load
with `use_safetensors=True` (no pickles).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from faceedittalker import __version__
from faceedittalker.errors import InputError
from faceedittalker.training.checkpoint import write_json_atomic

FORMAT_VERSION = 1  # of every model folder written here; bumped when a folder written earlier no longer loads


@contextlib.contextmanager
def atomic_folder(output: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A hidden temporary folder beside `output`, renamed to `output` when the block ends without error (removed
    when it raises): a model folder is either complete or absent. An existing `output` is an `InputError` unless
    `overwrite`."""
    output = Path(output).expanduser()
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists already (remove it, or pass overwrite=true)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")
    tmp.mkdir()
    try:
        yield tmp
        if output.exists():
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kind_of(part: object) -> str:
    """The name a folder stores for a part: its class name (checked against `parts` when loading)."""
    return type(part).__name__


class PretrainedFolder:
    """A model saved as a folder: `config_file` (JSON: part name -> kind, settings) and one folder per part.

    Subclasses set `config_file`, `description` (for errors: "stage-1 model"), `parts` (name -> class, the only
    classes a folder of this kind may hold), `optional_parts`, and implement `settings()` (the JSON-able
    settings) and `_from_parts(config, parts, **overrides)`.
    """

    config_file: ClassVar[str]
    description: ClassVar[str]
    parts: ClassVar[dict[str, type]]
    optional_parts: ClassVar[tuple[str, ...]] = ()

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """What `config_file` holds: class, format version, the parts' kinds and the settings."""
        kinds = {name: kind_of(getattr(self, name)) for name in self.parts if getattr(self, name, None) is not None}
        return {"_class_name": type(self).__name__, "format_version": FORMAT_VERSION,
                "faceedittalker_version": __version__, **kinds, **self.settings()}  # fmt: skip

    def save_config(self, directory: str | Path) -> None:
        """Write `config_file` only (the trainer writes the parts' EMA weights itself)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(directory) / self.config_file, self.config_dict())

    def save_pretrained(self, directory: str | Path, atomic: bool = True, overwrite: bool = False) -> None:
        """Every part in its folder, then `config_file`; `atomic`: into a temporary folder renamed at the end."""
        if atomic:
            with atomic_folder(directory, overwrite) as tmp:
                self.save_pretrained(tmp, atomic=False)
            return
        directory = Path(directory)
        for name in self.parts:
            part = getattr(self, name, None)
            if isinstance(part, PretrainedFolder):
                part.save_pretrained(directory / name, atomic=False)
            elif part is not None:
                part.save_pretrained(directory / name, safe_serialization=True)
        self.save_config(directory)

    @classmethod
    def read_config(cls, directory: str | Path) -> tuple[Path, dict[str, Any]]:
        """The folder and its JSON; a missing folder, a missing or unreadable JSON or a part of a kind other
        than ours is an `InputError`."""
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            raise InputError(f"{cls.description} folder not found: {directory}")
        path = directory / cls.config_file
        if not path.is_file():
            raise InputError(f"not a {cls.description} folder (no {cls.config_file}): {directory}")
        try:
            config = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read {path}: {err}") from err
        if not isinstance(config, dict):
            raise InputError(f"{path} does not hold a JSON object")
        version = config.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise InputError(f"{path} has format_version {version}; this faceedittalker reads up to "
                             f"{FORMAT_VERSION} (update faceedittalker)")  # fmt: skip
        for name, part_class in cls.parts.items():
            kind = config.get(name, part_class.__name__)
            if isinstance(kind, str) and kind != part_class.__name__:
                raise InputError(f"{path}: part '{name}' is of kind {kind!r}; a {cls.description} folder holds "
                                 f"only {part_class.__name__}")  # fmt: skip
        return directory, config

    @classmethod
    def load_part(cls, directory: Path, name: str, **overrides: Any) -> Any:
        """One part from `directory/name` (None for a missing optional part)."""
        folder, part_class = directory / name, cls.parts[name]
        if issubclass(part_class, PretrainedFolder):
            marker = folder / part_class.config_file
        else:
            marker = folder / "config.json"
        if not marker.is_file():
            if name in cls.optional_parts and not folder.exists():
                return None
            raise InputError(f"incomplete {cls.description} folder {directory}: {marker.relative_to(directory)} "
                             "is missing")  # fmt: skip
        if issubclass(part_class, PretrainedFolder):
            return part_class.from_pretrained(folder, **overrides)
        if not any(folder.glob("*.safetensors")):
            raise InputError(f"incomplete {cls.description} folder {directory}: no safetensors weights in {name}/")
        try:
            return part_class.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            raise InputError(f"cannot load {name}/ of {directory}: {str(err).splitlines()[0]}") from err

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", **overrides: Any):
        """Rebuild from a folder written by `save_pretrained` (or by a stage's export); `overrides` go to
        `_from_parts` and to nested folders (e.g. `autoencoder_path`)."""
        directory, config = cls.read_config(directory)
        parts = {name: cls.load_part(directory, name, **overrides) for name in cls.parts}
        try:
            model = cls._from_parts(directory, config, parts, device=device, **overrides)
        except (ValueError, TypeError) as err:  # settings the classes refuse (an unknown solver, ...): one line
            raise InputError(f"invalid {cls.description} folder {directory}: {err}") from err
        if isinstance(model, torch.nn.Module):
            model = model.to(device).eval()
        return model

    @classmethod
    def _from_parts(cls, directory: Path, config: dict[str, Any], parts: dict[str, Any], **overrides: Any):
        raise NotImplementedError

