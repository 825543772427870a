"""A plain `pip install .` carries every config and asset: the package-data globs cover them all.

The full check (a non-editable install that trains and renders from outside the checkout) is `.ci/check_install`,
run by `.ci/run`; it builds a wheel, so it is a CI step rather than a unit test.
"""

from __future__ import annotations

import pytest

from faceedittalker import ASSETS_DIR, CONFIGS_DIR, PACKAGE_DIR, REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def packaged_files() -> set:
    settings = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = settings["package-data"]["faceedittalker"]
    return {path for pattern in patterns for path in PACKAGE_DIR.glob(pattern) if path.is_file()}


def test_package_data_covers_every_config_and_asset():
    shipped = packaged_files()
    needed = {p for p in CONFIGS_DIR.rglob("*.yaml") if "local" not in p.relative_to(CONFIGS_DIR).parts}
    needed |= {p for p in ASSETS_DIR.rglob("*") if p.is_file()}
    assert needed - shipped == set()
    # The recipes in sub-folders and the landmarker model are among them.
    assert CONFIGS_DIR / "experiment" / "tiny" / "stage1.yaml" in shipped
    assert ASSETS_DIR / "face_landmarker.task" in shipped


def test_console_script_points_at_the_packaged_entry_point():
    from faceedittalker.cli import train

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["faceedittalker-train"] == "faceedittalker.cli.train:main"
    assert callable(train.main)
    # scripts/train.py is a thin wrapper around the same function.
    assert "from faceedittalker.cli.train import main" in (REPO_ROOT / "scripts" / "train.py").read_text()
