"""scripts/evaluate.py on generated vs ground-truth synthetic clips: the table, skipped metrics, Table V, bad input."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from helpers import run_script
from media_fixtures import write_video
from scipy.ndimage import gaussian_filter

from faceedittalker.data.clips import list_clips, read_frames
from faceedittalker.metrics.lipsync import SyncNet
from faceedittalker.metrics.suite import COLUMN_TITLES
from faceedittalker.synthetic.sets import write_synthetic_set


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two synthetic talking clips (ground truth) and blurred H.264 copies of them named alike (generated)."""
    root = tmp_path_factory.mktemp("evaluate")
    reference = write_synthetic_set(root / "reference", "clips", 2, resolution=96, clip_seconds=(0.8, 0.9))
    generated = root / "generated"
    generated.mkdir()
    for clip in list_clips(reference):
        frames = read_frames(clip)
        write_video(generated / f"{clip.name}.mp4", np.stack([gaussian_filter(f, (1, 1, 0)) for f in frames]), 25)
    return reference, generated, root


def _read(output):
    table = json.loads((output / "metrics.json").read_text())
    with open(output / "metrics.csv") as handle:
        rows = list(csv.reader(handle))
    return table, rows, (output / "metrics.md").read_text()


def test_identical_videos_and_skipped_weights(clips):
    reference, _, root = clips
    output = root / "identical"
    result = run_script("evaluate.py", f"generated={reference}", f"reference={reference}", f"output={output}",
                        f"weights_dir={root / 'none'}", "metrics=[m_lmd,psnr,fid,ssim,lse_d,lse_c]")
    assert result.returncode == 0, result.stderr[-2000:]
    reasons = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(reasons) == 2 and "weights-inception-2015-12-05" in reasons[0] and "syncnet_v2.model" in reasons[1]
    table, rows, markdown = _read(output)
    assert table["columns"] == ["ssim", "psnr", "m_lmd"]  # the paper's order, skipped ones left out
    assert rows[0] == ["video", "frames", *[COLUMN_TITLES[c] for c in table["columns"]]]
    assert [r[0] for r in rows[1:]] == ["synthetic_000000", "synthetic_000001", "mean"]
    for name, row in table["rows"].items():
        assert row["psnr"] == "inf" and row["ssim"] == pytest.approx(1.0) and row["m_lmd"] == 0.0, name
    assert set(table["skipped"]) == {"fid", "lse_d", "lse_c"}
    assert "| mean |" in markdown and "| inf |" in markdown


@pytest.mark.slow
def test_sync_columns_with_syncnet_weights(clips):
    """The LSE path end to end, with a state dict in the released layout (random values: the numbers mean nothing)."""
    reference, generated, root = clips
    weights = root / "weights_random_syncnet"
    weights.mkdir()
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), weights / "syncnet_v2.model")
    output = root / "sync"
    result = run_script("evaluate.py", f"generated={generated}", f"reference={reference}", f"output={output}",
                        f"weights_dir={weights}", "metrics=[av_offset,lse_c,lse_d]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped" not in result.stderr
    table, _, _ = _read(output)
    assert table["columns"] == ["lse_d", "lse_c", "av_offset"]
    for row in table["rows"].values():
        assert row["lse_c"] >= 0 and row["lse_d"] > 0 and -15 <= row["av_offset"] <= 15


def test_blurred_copies_and_table_v(clips):
    reference, generated, root = clips
    output = root / "blurred"
    result = run_script("evaluate.py", f"generated={generated}", f"reference={reference}", f"output={output}",
                        f"weights_dir={root / 'none'}", "metrics=[ssim,psnr,cpbd,lse_d,lse_c,f_lmd]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("LSE-D/LSE-C skipped") == 1  # one line for the sync columns
    table, _, _ = _read(output)
    assert table["columns"] == ["ssim", "psnr", "cpbd", "f_lmd"]
    mean = table["rows"]["mean"]
    assert 0.5 < mean["ssim"] < 1 and 20 < mean["psnr"] < 45 and 0 < mean["f_lmd"] < 10
    assert mean["frames"] == sum(row["frames"] for name, row in table["rows"].items() if name != "mean")

    output_v = root / "table_v"
    result = run_script("evaluate.py", "table=V", f"reference={reference}", f"runs={{II: {generated}}}",
                        f"output={output_v}", f"weights_dir={root / 'none'}")
    assert result.returncode == 0, result.stderr[-2000:]
    table, rows, _ = _read(output_v)
    assert table["columns"] == ["m_lmd", "f_lmd"]  # Table V's columns that have weights here
    assert [r[0] for r in rows] == ["method", "I (original)", "II"]
    assert table["rows"]["I (original)"]["m_lmd"] == 0.0 and table["rows"]["II"]["m_lmd"] > 0
    assert not math.isnan(table["rows"]["II"]["f_lmd"])


def test_bad_input_is_one_line(clips, tmp_path):
    reference, _, _ = clips
    for args, message in [((f"generated={tmp_path / 'missing'}", f"reference={reference}"), "generated not found"),
                          ((f"generated={reference}", f"reference={reference}", "metrics=[nope]"), "unknown metric"),
                          ((f"generated={tmp_path}", f"reference={reference}"), "no videos")]:
        result = run_script("evaluate.py", *args, f"output={tmp_path / 'out'}")
        assert result.returncode == 2, result.stderr[-1000:]
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
