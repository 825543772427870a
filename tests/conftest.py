"""Shared fixtures. Helper functions live in `helpers.py` (tests/ is on sys.path, not a package)."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: keeps CPU runs sane when processes share the 2 cores
# (a training subprocess beside the test process). Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One cache for the whole session, so the synthetic set of `experiment=tiny` is generated once."""
    return tmp_path_factory.mktemp("cache")
