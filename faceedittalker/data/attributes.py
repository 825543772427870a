"""The 40 CelebA attribute names and the CelebAMask-HQ attribute file (`CelebAMask-HQ-attribute-anno.txt`).

Format: line 1 is the number of images, line 2 the attribute names separated by spaces, then one line per
image: `filename v1 ... vN` with every v in {1, -1}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from faceedittalker.errors import InputError
from faceedittalker.utils.files import write_text_atomic

ATTRIBUTE_FILE_NAME = "CelebAMask-HQ-attribute-anno.txt"

# Standard CelebA order (list_attr_celeba.txt and CelebAMask-HQ use the same one).
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip


def read_attribute_file(path: str | os.PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read an attribute file; returns the names and, per file name, an int8 vector of +1/-1 values."""
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read attribute file {path}: {err}") from err
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise InputError(f"{path}: not an attribute file (line 1 must be the image count, line 2 the names)")
    count, names = int(lines[0][0]), lines[1]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: duplicate attribute names on line 2")
    rows: dict[str, np.ndarray] = {}
    for line_no, fields in enumerate(lines[2:], start=3):
        if len(fields) != len(names) + 1:
            raise InputError(f"{path}:{line_no}: expected a file name and {len(names)} values")
        try:
            values = np.array([int(v) for v in fields[1:]], dtype=np.int8)
        except ValueError as err:
            raise InputError(f"{path}:{line_no}: values must be 1 or -1") from err
        if not np.all(np.abs(values) == 1):
            raise InputError(f"{path}:{line_no}: values must be 1 or -1")
        if fields[0] in rows:
            raise InputError(f"{path}:{line_no}: file {fields[0]} is listed twice")
        rows[fields[0]] = values
    if len(rows) != count:
        raise InputError(f"{path}: line 1 says {count} images but {len(rows)} rows follow")
    return list(names), rows


def write_attribute_file(
    path: str | os.PathLike, names: Sequence[str], rows: Mapping[str, Sequence[int] | np.ndarray]
) -> None:
    """Write an attribute file atomically (temp file + rename). Values may be +1/-1 or booleans."""
    path = Path(path)
    names = list(names)
    lines = [str(len(rows)), " ".join(names)]
    for file_name, values in rows.items():
        values = np.asarray(values)
        if values.dtype == bool:
            values = np.where(values, 1, -1)
        if values.shape != (len(names),) or not np.all(np.abs(values) == 1):
            raise ValueError(f"row {file_name}: need {len(names)} values in {{1, -1}}")
        if any(c.isspace() for c in file_name):
            raise ValueError(f"file name {file_name!r} contains whitespace")
        lines.append(file_name + " " + " ".join(str(int(v)) for v in values))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")
