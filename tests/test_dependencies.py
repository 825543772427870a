"""pyproject.toml's lower bounds admit no version that lacks an API the code calls."""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement

from faceedittalker import REPO_ROOT


def _requirement(name: str) -> Requirement:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(line) for line in project["dependencies"] if Requirement(line).name == name]
    assert len(found) == 1, f"{name} is not declared once in pyproject.toml"
    return found[0]


def test_scikit_image_bound_has_similarity_transform_from_estimate():
    # landmarks/pose.py fits the canonical mesh with SimilarityTransform.from_estimate, new in scikit-image 0.26.
    from skimage.transform import SimilarityTransform

    assert hasattr(SimilarityTransform, "from_estimate")
    specifier = _requirement("scikit-image").specifier
    assert not specifier.contains("0.25.2") and specifier.contains("0.26.0")
