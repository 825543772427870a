"""Speed of the vectorised CPBD against the reference package (`cpbd-py312`) on the astronaut and crops of it.

    python scripts/benchmark_cpbd.py [repeats]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from PIL import Image

from faceedittalker import DEMO_PORTRAIT
from faceedittalker.metrics.cpbd import cpbd, to_grey


def timed(fn, repeats: int) -> tuple[float, float]:
    start = time.perf_counter()
    for _ in range(repeats):
        value = fn()
    return value, (time.perf_counter() - start) / repeats


def main(repeats: int = 3) -> None:
    import cpbd as reference

    with Image.open(DEMO_PORTRAIT) as image:
        astronaut = np.asarray(image.convert("RGB"))
    frames = {"512x512": astronaut, "256x256 crop": astronaut[100:356, 50:306],
              "256x256 resized": np.ascontiguousarray(astronaut[::2, ::2])}  # fmt: skip
    print("| frame | reference s | ours s | speed-up | |difference| |")
    print("|---|---|---|---|---|")
    for name, frame in frames.items():
        theirs, reference_s = timed(lambda f=frame: reference.compute(to_grey(f)), repeats)
        ours, ours_s = timed(lambda f=frame: cpbd(f), repeats)
        print(f"| {name} | {reference_s:.3f} | {ours_s:.3f} | {reference_s / ours_s:.1f}x | {abs(ours - theirs):.1e} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
