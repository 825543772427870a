"""Shared fixtures. Helper functions live in `helpers.py` (tests/ is on sys.path, not a package)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """One cache for the whole session, so the synthetic sets of the tiny recipes are generated once."""
    return tmp_path_factory.mktemp("cache")
