"""FaceEditTalker: audio-driven talking-head generation with facial attribute editing."""

from pathlib import Path

__version__ = "0.1.0"

# Configs and vendored assets ship inside the package, so a plain (non-editable) install finds them too.
PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
CONFIGS_DIR = PACKAGE_DIR / "configs"
# The source checkout (scripts/, tests/, docs/); only meaningful when running from one.
REPO_ROOT = PACKAGE_DIR.parent
# What `scripts/infer.py` and the web demo use when given nothing: the bundled model, portrait and speech.
DEMO_MODEL = ASSETS_DIR / "demo_model"
DEMO_PORTRAIT = ASSETS_DIR / "astronaut.jpg"
DEMO_SPEECH = ASSETS_DIR / "speech" / "en_female.wav"
