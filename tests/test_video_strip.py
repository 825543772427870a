"""scripts/video_strip.py: the README's strips of video frames."""

from __future__ import annotations

import numpy as np
from helpers import run_script_main
from media_fixtures import write_video
from PIL import Image


def test_strip_shows_every_nth_frame_after_the_portrait(monkeypatch, tmp_path):
    # 10 frames of 32 x 48, frame i a flat grey of level 20 i: the strip's tiles must be frames 0, 3, 6.
    frames = np.stack([np.full((32, 48, 3), 20 * i, np.uint8) for i in range(10)])
    video = write_video(tmp_path / "clip.mp4", frames, fps=25)
    portrait = tmp_path / "portrait.png"
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(portrait)
    out = tmp_path / "strip.png"
    assert run_script_main(monkeypatch, "video_strip.py", f"video={video}", f"output={out}", "every=3", "count=3",
                           "height=16", f"portrait={portrait}") == 0  # fmt: skip
    strip = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert strip.shape == (16, 16 + 3 * 24, 3)  # the square portrait, then three 3:2 tiles
    assert strip[:, :16].min() > 245
    levels = [strip[:, 16 + 24 * k : 16 + 24 * (k + 1)].mean() for k in range(3)]
    assert np.allclose(levels, [0, 60, 120], atol=4), levels


def test_strip_rejects_a_missing_video_in_one_line(monkeypatch, tmp_path, capsys):
    out = tmp_path / "strip.png"
    assert run_script_main(monkeypatch, "video_strip.py", f"video={tmp_path / 'none.mp4'}", f"output={out}") == 2
    assert capsys.readouterr().err.strip().startswith("error: video not found") and not out.exists()
