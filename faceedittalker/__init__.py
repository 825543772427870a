"""FaceEditTalker: audio-driven talking-head generation with facial attribute editing."""

from pathlib import Path

__version__ = "0.1.0"

# The repository root (editable install): vendored assets and configs live beside the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"
CONFIGS_DIR = REPO_ROOT / "configs"
