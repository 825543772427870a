"""Measure landmark extraction (frames/s) and preprocessing speed (seconds per minute of video) on this CPU.

    python scripts/benchmark_preprocess.py [seconds=20] [size=512]

Builds a talking-astronaut video (640x512, 30 fps, 44.1 kHz stereo AAC; tests/media_fixtures.py) of the given
length, then times the Face Landmarker in image and video mode on 512 px frames and the whole preprocessing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from faceedittalker import REPO_ROOT
from faceedittalker.data.preprocess import Preprocessor, PreprocessSettings
from faceedittalker.landmarks.detector import FaceLandmarker

sys.path.insert(0, str(REPO_ROOT / "tests"))
from media_fixtures import astronaut, talking_video  # noqa: E402


def landmark_fps(mode: str, frames: int = 200) -> float:
    image = astronaut()
    with FaceLandmarker(mode=mode) as landmarker:
        landmarker.detect(image)  # warm-up
        start = time.perf_counter()
        for _ in range(frames):
            assert landmarker.detect(image) is not None
        return frames / (time.perf_counter() - start)


def main() -> None:
    options = dict(arg.split("=", 1) for arg in sys.argv[1:])
    seconds, size = float(options.get("seconds", 20)), int(options.get("size", 512))
    print(
        f"Face Landmarker, 512x512 image: {landmark_fps('image'):.0f} frames/s (image mode), "
        f"{landmark_fps('video'):.0f} frames/s (video mode, tracking)"
    )
    with tempfile.TemporaryDirectory() as folder:
        raw, output = Path(folder) / "raw", Path(folder) / "clips"
        raw.mkdir()
        talking_video(raw / "talk.mp4", seconds=seconds)
        start = time.perf_counter()
        summary = Preprocessor(raw, output, PreprocessSettings(size=size)).run(progress=False)
        elapsed = time.perf_counter() - start
        assert summary["clips_kept"] >= 1, summary
    print(
        f"preprocessing a {seconds:.0f} s 640x512 30 fps video to {size} px clips: {elapsed:.1f} s "
        f"= {elapsed * 60 / seconds:.0f} s per minute of video ({seconds * 25 / elapsed:.0f} output frames/s)"
    )


if __name__ == "__main__":
    main()
